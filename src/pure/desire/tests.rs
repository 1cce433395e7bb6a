//! Table-style tests of desire: which endpoints and nodes become targets.

use super::*;
use crate::model::cluster::ClusterSnapshot;
use crate::model::cluster::{
    Endpoint, EndpointPort, EndpointSlice, GateCondition, Node, Pod, ReadinessGate, Taint,
};
use crate::pure::binding::fixtures;
use crate::pure::binding::selector::LabelSelector;
use std::collections::BTreeMap;

fn binding(target_type: TargetType, port: PortRef) -> ResolvedBinding {
    let mut binding = fixtures::binding("web", "arn");
    binding.service.port = port;
    fixtures::resolved(binding, target_type)
}

fn service(node_port: Option<i32>) -> Service {
    Service {
        namespace: "default".into(),
        name: "web".into(),
        service_type: if node_port.is_some() {
            "NodePort"
        } else {
            "ClusterIP"
        }
        .into(),
        ports: vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            protocol: "TCP".into(),
            node_port,
        }],
    }
}

fn endpoint(ip: &str, ready: Option<bool>, terminating: Option<bool>, node: &str) -> Endpoint {
    Endpoint {
        addresses: vec![ip.into()],
        ready,
        terminating,
        node_name: Some(node.into()),
        pod: Some(format!("default/pod-{ip}").into()),
    }
}

fn slice(name: &str, address_type: &str, port: i32, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        namespace: "default".into(),
        name: name.into(),
        service_name: Some("web".into()),
        address_type: address_type.into(),
        ports: vec![EndpointPort {
            name: Some("http".into()),
            port: Some(port),
            protocol: Some("TCP".into()),
        }],
        endpoints,
    }
}

fn node(name: &str, ip: &str, ready: &str) -> Node {
    Node {
        name: name.into(),
        labels: BTreeMap::new(),
        taints: vec![],
        ready: Some(ready.into()),
        provider_id: Some(format!("aws:///us-west-2a/i-{name}")),
        internal_ips: vec![ip.into()],
    }
}

fn keys(desired: &DesiredTargets) -> Vec<String> {
    desired.targets.keys().map(|t| t.to_string()).collect()
}

const VPC: &[&str] = &["192.168.0.0/16"];

fn vpc() -> Vec<IpNet> {
    VPC.iter().map(|c| c.parse().expect("cidr")).collect()
}

#[test]
fn ip_targets_are_the_ready_endpoints_of_the_service_port() {
    let cases: Vec<(&str, Vec<EndpointSlice>, Vec<&str>)> = vec![
        (
            "ready unset counts as ready",
            vec![slice(
                "a",
                "IPv4",
                8080,
                vec![endpoint("192.168.1.1", None, None, "n")],
            )],
            vec!["192.168.1.1:8080"],
        ),
        (
            "not ready and terminating endpoints are left out",
            vec![slice(
                "a",
                "IPv4",
                8080,
                vec![
                    endpoint("192.168.1.1", Some(true), Some(false), "n"),
                    endpoint("192.168.1.2", Some(false), None, "n"),
                    endpoint("192.168.1.3", Some(true), Some(true), "n"),
                ],
            )],
            vec!["192.168.1.1:8080"],
        ),
        (
            "named ports resolve per slice",
            vec![
                slice(
                    "a",
                    "IPv4",
                    8080,
                    vec![endpoint("192.168.1.1", None, None, "n")],
                ),
                slice(
                    "b",
                    "IPv4",
                    9090,
                    vec![endpoint("192.168.1.2", None, None, "n")],
                ),
            ],
            vec!["192.168.1.1:8080", "192.168.1.2:9090"],
        ),
        (
            "an endpoint in two slices is one target",
            vec![
                slice(
                    "a",
                    "IPv4",
                    8080,
                    vec![endpoint("192.168.1.1", None, None, "n")],
                ),
                slice(
                    "b",
                    "IPv4",
                    8080,
                    vec![endpoint("192.168.1.1", None, None, "n")],
                ),
            ],
            vec!["192.168.1.1:8080"],
        ),
        (
            "another address family is left out",
            vec![slice(
                "a",
                "IPv6",
                8080,
                vec![endpoint("2001:db8::1", None, None, "n")],
            )],
            vec![],
        ),
    ];
    for (name, slices, expected) in cases {
        let cluster = ClusterSnapshot {
            services: vec![service(None)],
            endpoint_slices: slices,
            ..Default::default()
        };
        let desired = desire(
            &binding(TargetType::Ip, PortRef::Number(80)),
            &ClusterView::of(&cluster),
            Some(&vpc()),
        )
        .expect(name);
        assert_eq!(keys(&desired), expected, "{name}");
    }
}

#[test]
fn ips_outside_the_target_groups_vpc_are_registered_in_zone_all() {
    let cluster = ClusterSnapshot {
        services: vec![service(None)],
        endpoint_slices: vec![slice(
            "a",
            "IPv4",
            80,
            vec![
                endpoint("192.168.1.1", None, None, "n"),
                endpoint("10.1.1.1", None, None, "n"),
            ],
        )],
        ..Default::default()
    };
    let b = binding(TargetType::Ip, PortRef::Name("http".into()));
    let zones: Vec<Option<String>> = desire(&b, &ClusterView::of(&cluster), Some(&vpc()))
        .expect("desired")
        .targets
        .values()
        .map(|t| t.availability_zone.clone())
        .collect();
    assert_eq!(zones, [Some("all".to_string()), None]);
    let unknown_vpc = desire(&b, &ClusterView::of(&cluster), None).expect("desired");
    assert!(
        unknown_vpc
            .targets
            .values()
            .all(|t| t.availability_zone.as_deref() == Some("all"))
    );
}

#[test]
fn a_missing_service_or_port_fails_the_binding_naming_the_field() {
    let cluster = ClusterSnapshot {
        services: vec![service(None)],
        ..Default::default()
    };
    let mut other = binding(TargetType::Ip, PortRef::Number(80));
    other.binding.service.name = "gone".into();
    let cases = [
        (other, "spec.serviceRef.name"),
        (
            binding(TargetType::Ip, PortRef::Number(81)),
            "spec.serviceRef.port",
        ),
        (
            binding(TargetType::Ip, PortRef::Name("grpc".into())),
            "spec.serviceRef.port",
        ),
    ];
    for (b, field) in cases {
        assert_eq!(
            desire(&b, &ClusterView::of(&cluster), Some(&vpc()))
                .expect_err(field)
                .field,
            field
        );
    }
}

#[test]
fn instance_targets_are_ready_eligible_nodes_at_the_node_port() {
    let with = |mut n: Node, f: &dyn Fn(&mut Node)| {
        f(&mut n);
        n
    };
    let nodes = vec![
        node("ok", "10.0.0.1", "True"),
        node("notready", "10.0.0.2", "False"),
        node("unknown", "10.0.0.3", "Unknown"),
        with(node("excluded", "10.0.0.4", "True"), &|n| {
            n.labels.insert(
                "node.kubernetes.io/exclude-from-external-load-balancers".into(),
                "".into(),
            );
        }),
        with(node("fargate", "10.0.0.5", "True"), &|n| {
            n.labels
                .insert("eks.amazonaws.com/compute-type".into(), "fargate".into());
        }),
        with(node("scaledown", "10.0.0.6", "True"), &|n| {
            n.taints.push(Taint {
                key: "ToBeDeletedByClusterAutoscaler".into(),
                effect: "NoSchedule".into(),
            });
        }),
        with(node("karpenter", "10.0.0.7", "True"), &|n| {
            n.taints.push(Taint {
                key: "karpenter.sh/disrupted".into(),
                effect: "NoSchedule".into(),
            });
        }),
        with(node("noid", "10.0.0.8", "True"), &|n| {
            n.provider_id = Some("eks-hybrid:///x/mi-1".into())
        }),
        with(node("web", "10.0.0.9", "True"), &|n| {
            n.labels.insert("pool".into(), "web".into());
        }),
    ];
    let cluster = ClusterSnapshot {
        services: vec![service(Some(30001))],
        nodes,
        ..Default::default()
    };
    let all = desire(
        &binding(TargetType::Instance, PortRef::Number(80)),
        &ClusterView::of(&cluster),
        None,
    )
    .expect("desired");
    assert_eq!(keys(&all), ["i-ok:30001", "i-web:30001"]);

    let mut selected = binding(TargetType::Instance, PortRef::Number(80));
    selected.binding.node_selector = Some(LabelSelector {
        match_labels: [("pool".to_string(), "web".to_string())].into(),
        ..Default::default()
    });
    assert_eq!(
        keys(&desire(&selected, &ClusterView::of(&cluster), None).expect("desired")),
        ["i-web:30001"]
    );
}

#[test]
fn host_network_endpoints_without_a_node_port_register_their_instance_at_the_pod_port() {
    let cluster = ClusterSnapshot {
        services: vec![service(None)],
        nodes: vec![
            node("a", "10.0.0.1", "True"),
            node("b", "10.0.0.2", "True"),
            node("c", "10.0.0.3", "True"),
        ],
        endpoint_slices: vec![slice(
            "s",
            "IPv4",
            8053,
            vec![
                endpoint("10.0.0.1", None, None, "a"),
                endpoint("10.0.0.2", Some(false), None, "b"),
            ],
        )],
        ..Default::default()
    };
    let b = binding(TargetType::Instance, PortRef::Number(80));
    assert_eq!(
        keys(&desire(&b, &ClusterView::of(&cluster), None).expect("desired")),
        ["i-a:8053"]
    );

    let mut pod_network = cluster.clone();
    pod_network.endpoint_slices[0]
        .endpoints
        .push(endpoint("192.168.9.9", None, None, "c"));
    let error = desire(&b, &ClusterView::of(&pod_network), None)
        .expect_err("pod IPs cannot be instance targets");
    assert_eq!(error.field, "spec.serviceRef.port");
    assert!(error.message.contains("no NodePort"), "{error}");
}

#[test]
fn provider_ids_yield_instance_ids_only_for_ec2_instances() {
    let cases = [
        (
            "aws:///us-west-2a/i-0123456789abcdef0",
            Some("i-0123456789abcdef0"),
        ),
        ("aws:////i-0abc", Some("i-0abc")),
        ("i-0abc", Some("i-0abc")),
        ("aws:///us-west-2a/fargate-ip-10-0-0-1", None),
        ("eks-hybrid:///us-west-2/my-cluster/mi-0123", None),
        ("", None),
    ];
    for (provider_id, expected) in cases {
        assert_eq!(nodes::instance_id(provider_id), expected, "{provider_id}");
    }
}

const GATE: &str = "target-health.elbv2.k8s.aws/web";

fn condition(status: &str) -> GateCondition {
    GateCondition {
        status: status.into(),
        reason: None,
        message: None,
    }
}

/// The pod behind `endpoint(ip, ..)`, listing these gates.
fn gated_pod(ip: &str, gates: &[(&str, Option<GateCondition>)]) -> Pod {
    Pod {
        namespace: "default".into(),
        name: format!("pod-{ip}"),
        containers_ready: true,
        gates: gates
            .iter()
            .map(|(condition_type, condition)| ReadinessGate {
                condition_type: (*condition_type).into(),
                condition: condition.clone(),
            })
            .collect(),
        ..Pod::default()
    }
}

/// `(target, source, pod's condition status)` of each gate entry.
fn gate_entries(desired: &DesiredTargets) -> Vec<(String, String, Option<String>)> {
    desired
        .gates
        .iter()
        .map(|g| {
            (
                g.target.to_string(),
                g.pod.to_string(),
                g.condition.as_ref().map(|c| c.status.clone()),
            )
        })
        .collect()
}

#[test]
fn a_pod_held_back_only_by_the_bindings_gate_is_registered_and_its_gate_listed() {
    let ip = "192.168.1.1";
    let pod_key = format!("default/pod-{ip}");
    let entry = |status: Option<&str>| {
        vec![(
            format!("{ip}:8080"),
            pod_key.clone(),
            status.map(str::to_string),
        )]
    };
    let with = |mut pod: Pod, f: &dyn Fn(&mut Pod)| {
        f(&mut pod);
        pod
    };
    let waiting = || gated_pod(ip, &[(GATE, None)]);
    type Case = (
        &'static str,
        Endpoint,
        Vec<Pod>,
        Option<TargetSource>,
        Vec<(String, String, Option<String>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "containers ready, endpoint not ready: registered as gated, gate listed",
            endpoint(ip, Some(false), None, "n"),
            vec![waiting()],
            Some(TargetSource::GatedPod(pod_key.clone().into())),
            entry(None),
        ),
        (
            "a gate already False is listed with its condition",
            endpoint(ip, Some(false), None, "n"),
            vec![gated_pod(ip, &[(GATE, Some(condition("False")))])],
            Some(TargetSource::GatedPod(pod_key.clone().into())),
            entry(Some("False")),
        ),
        (
            "containers not ready: not registered",
            endpoint(ip, Some(false), None, "n"),
            vec![with(waiting(), &|p| p.containers_ready = false)],
            None,
            vec![],
        ),
        (
            "the endpoint terminating: not registered",
            endpoint(ip, Some(false), Some(true), "n"),
            vec![waiting()],
            None,
            vec![],
        ),
        (
            "the pod being deleted: not registered",
            endpoint(ip, Some(false), None, "n"),
            vec![with(waiting(), &|p| p.terminating = true)],
            None,
            vec![],
        ),
        (
            "gated by another binding's gate only: not registered while not ready",
            endpoint(ip, Some(false), None, "n"),
            vec![gated_pod(
                ip,
                &[("target-health.elbv2.k8s.aws/other", None)],
            )],
            None,
            vec![],
        ),
        (
            "a Ready pod whose gate passed: registered as ready, gate listed as True",
            endpoint(ip, Some(true), None, "n"),
            vec![gated_pod(ip, &[(GATE, Some(condition("True")))])],
            Some(TargetSource::Pod(pod_key.clone().into())),
            entry(Some("True")),
        ),
        (
            "a Ready pod gated by another binding only: registered, no gate listed",
            endpoint(ip, Some(true), None, "n"),
            vec![gated_pod(
                ip,
                &[("target-health.elbv2.k8s.aws/other", None)],
            )],
            Some(TargetSource::Pod(pod_key.clone().into())),
            vec![],
        ),
        (
            "no pod has gates: a Ready endpoint is registered, nothing listed",
            endpoint(ip, Some(true), None, "n"),
            vec![with(waiting(), &|p| p.gates.clear())],
            Some(TargetSource::Pod(pod_key.clone().into())),
            vec![],
        ),
        (
            "no pod has gates: a not-ready endpoint is not registered",
            endpoint(ip, Some(false), None, "n"),
            vec![with(waiting(), &|p| p.gates.clear())],
            None,
            vec![],
        ),
    ];
    for (case, endpoint, pods, source, gates) in cases {
        let cluster = ClusterSnapshot {
            services: vec![service(None)],
            endpoint_slices: vec![slice("a", "IPv4", 8080, vec![endpoint])],
            pods,
            ..Default::default()
        };
        let desired = desire(
            &binding(TargetType::Ip, PortRef::Number(80)),
            &ClusterView::of(&cluster),
            Some(&vpc()),
        )
        .expect(case);
        let sources: Vec<TargetSource> =
            desired.targets.values().map(|t| t.source.clone()).collect();
        assert_eq!(sources, Vec::from_iter(source), "{case}");
        assert_eq!(gate_entries(&desired), gates, "{case}");
        assert!(desired.ungateable.is_empty(), "{case}");
    }
}

#[test]
fn a_gated_endpoint_in_two_slices_is_one_target_and_one_gate() {
    let ip = "192.168.1.1";
    let cluster = ClusterSnapshot {
        services: vec![service(None)],
        endpoint_slices: vec![
            slice(
                "a",
                "IPv4",
                8080,
                vec![endpoint(ip, Some(false), None, "n")],
            ),
            slice(
                "b",
                "IPv4",
                8080,
                vec![endpoint(ip, Some(false), None, "n")],
            ),
        ],
        pods: vec![gated_pod(ip, &[(GATE, None)])],
        ..Default::default()
    };
    let desired = desire(
        &binding(TargetType::Ip, PortRef::Number(80)),
        &ClusterView::of(&cluster),
        Some(&vpc()),
    )
    .expect("desired");
    assert_eq!(keys(&desired), ["192.168.1.1:8080"]);
    assert_eq!(desired.gates.len(), 1, "{:?}", desired.gates);
}

#[test]
fn the_evidence_counts_the_endpoints_waiting_on_the_gate_among_the_not_ready() {
    let cluster = ClusterSnapshot {
        services: vec![service(None)],
        endpoint_slices: vec![slice(
            "a",
            "IPv4",
            8080,
            vec![
                endpoint("192.168.1.1", Some(true), None, "n"),
                endpoint("192.168.1.2", Some(false), None, "n"),
                endpoint("192.168.1.3", Some(false), None, "n"),
                endpoint("192.168.1.4", Some(false), None, "n"),
                endpoint("192.168.1.5", Some(false), Some(true), "n"),
            ],
        )],
        pods: vec![
            gated_pod("192.168.1.2", &[(GATE, None)]),
            gated_pod("192.168.1.3", &[(GATE, Some(condition("False")))]),
        ],
        ..Default::default()
    };
    let desired = desire(
        &binding(TargetType::Ip, PortRef::Number(80)),
        &ClusterView::of(&cluster),
        Some(&vpc()),
    )
    .expect("desired");
    assert_eq!(
        desired.evidence,
        "Service default/web has 1 ready endpoint(s), 3 not ready (2 waiting on a readiness gate, registered), 1 terminating"
    );
    assert_eq!(
        keys(&desired),
        ["192.168.1.1:8080", "192.168.1.2:8080", "192.168.1.3:8080"]
    );

    let ungated = ClusterSnapshot {
        pods: vec![],
        ..cluster
    };
    let desired = desire(
        &binding(TargetType::Ip, PortRef::Number(80)),
        &ClusterView::of(&ungated),
        Some(&vpc()),
    )
    .expect("desired");
    assert_eq!(
        desired.evidence, "Service default/web has 1 ready endpoint(s), 3 not ready, 1 terminating",
        "no gate, no mention"
    );
}

#[test]
fn an_instance_bindings_gated_pods_are_ungateable_and_get_no_gate() {
    let cluster = ClusterSnapshot {
        services: vec![service(Some(30001))],
        nodes: vec![node("a", "10.0.0.1", "True")],
        endpoint_slices: vec![
            slice(
                "s1",
                "IPv4",
                8080,
                vec![
                    endpoint("192.168.1.2", Some(false), None, "a"),
                    endpoint("192.168.1.1", Some(true), None, "a"),
                    endpoint("192.168.1.3", Some(false), None, "a"),
                    endpoint("192.168.1.4", Some(true), None, "a"),
                ],
            ),
            // The same pod listed again by a second slice is named once.
            slice(
                "s2",
                "IPv4",
                8080,
                vec![endpoint("192.168.1.1", Some(true), None, "a")],
            ),
        ],
        pods: vec![
            gated_pod("192.168.1.1", &[(GATE, Some(condition("True")))]),
            gated_pod("192.168.1.2", &[(GATE, None)]),
            gated_pod(
                "192.168.1.3",
                &[("target-health.elbv2.k8s.aws/other", None)],
            ),
        ],
        ..Default::default()
    };
    let desired = desire(
        &binding(TargetType::Instance, PortRef::Number(80)),
        &ClusterView::of(&cluster),
        None,
    )
    .expect("desired");
    assert_eq!(keys(&desired), ["i-a:30001"]);
    let ungateable: Vec<&str> = desired.ungateable.iter().map(|p| &**p).collect();
    assert_eq!(
        ungateable,
        ["default/pod-192.168.1.1", "default/pod-192.168.1.2"]
    );
    assert!(desired.gates.is_empty(), "{:?}", desired.gates);
}
