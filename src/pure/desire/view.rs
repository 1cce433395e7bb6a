//! One run's lookups into the cluster snapshot, built once and shared by every binding's
//! desire: a thousand bindings scanning every Service, slice and node each is quadratic.

use super::nodes;
use crate::model::cluster::{ClusterSnapshot, EndpointSlice, Node, Pod, Service};
use crate::pure::binding::selector::LabelSelector;
use foldhash::{HashMap, HashMapExt};

pub struct ClusterView<'a> {
    /// By namespace, then name (nested: a tuple key cannot be looked up with shorter borrows).
    services: HashMap<&'a str, HashMap<&'a str, &'a Service>>,
    /// By namespace, then Service name.
    slices: HashMap<&'a str, HashMap<&'a str, Vec<&'a EndpointSlice>>>,
    nodes: HashMap<&'a str, &'a Node>,
    /// Every node in snapshot order, with its instance id when it may carry load-balancer
    /// traffic before any nodeSelector is applied.
    instances: Vec<(&'a Node, Option<&'a str>)>,
    /// Positions in `instances` of the nodes carrying each label, by key then value.
    labelled: HashMap<&'a str, HashMap<&'a str, Vec<usize>>>,
    /// The pods that declare readiness gates, by `namespace/name` (as endpoints name them):
    /// most clusters have none, and then no endpoint looks its pod up.
    gated: HashMap<String, &'a Pod>,
}

impl<'a> ClusterView<'a> {
    pub fn of(snapshot: &'a ClusterSnapshot) -> Self {
        let mut services: HashMap<_, HashMap<_, _>> = HashMap::new();
        for service in &snapshot.services {
            // The first of two same-named entries wins, as a scan would find it.
            services
                .entry(service.namespace.as_str())
                .or_default()
                .entry(service.name.as_str())
                .or_insert(service);
        }
        let mut slices: HashMap<_, HashMap<_, Vec<_>>> = HashMap::new();
        for slice in &snapshot.endpoint_slices {
            if let Some(service) = slice.service_name.as_deref() {
                slices
                    .entry(slice.namespace.as_str())
                    .or_default()
                    .entry(service)
                    .or_default()
                    .push(slice);
            }
        }
        let mut nodes = HashMap::with_capacity(snapshot.nodes.len());
        for node in &snapshot.nodes {
            nodes.entry(&*node.name).or_insert(node);
        }
        let instances = snapshot
            .nodes
            .iter()
            .map(|node| (node, nodes::unselected_instance(node).ok()))
            .collect();
        let mut labelled: HashMap<_, HashMap<_, Vec<_>>> = HashMap::new();
        for (at, node) in snapshot.nodes.iter().enumerate() {
            for (key, value) in &node.labels {
                labelled
                    .entry(key.as_str())
                    .or_default()
                    .entry(value.as_str())
                    .or_default()
                    .push(at);
            }
        }
        let gated = snapshot
            .pods
            .iter()
            .filter(|pod| !pod.gates.is_empty())
            .map(|pod| (pod.key(), pod))
            .collect();
        Self {
            services,
            slices,
            nodes,
            instances,
            labelled,
            gated,
        }
    }

    /// Whether any pod declares readiness gates (most clusters: none).
    pub fn has_gated_pods(&self) -> bool {
        !self.gated.is_empty()
    }

    /// The pod behind an endpoint (`namespace/name`), when it declares readiness gates.
    pub fn gated_pod(&self, key: &str) -> Option<&'a Pod> {
        self.gated.get(key).copied()
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        self.services.get(namespace)?.get(name).copied()
    }

    /// The slices the EndpointSlice controller (or whoever manages them) made for a Service,
    /// in snapshot order.
    pub fn slices_of(&self, namespace: &str, service: &str) -> &[&'a EndpointSlice] {
        self.slices
            .get(namespace)
            .and_then(|services| services.get(service))
            .map_or(&[], Vec::as_slice)
    }

    pub fn node(&self, name: &str) -> Option<&'a Node> {
        self.nodes.get(name).copied()
    }

    /// How many nodes the cluster has, eligible or not.
    pub fn node_count(&self) -> usize {
        self.instances.len()
    }

    /// The eligible instances the selector picks, in snapshot order. Only nodes carrying one
    /// of its `matchLabels` are tried: a selector per node group would otherwise test every
    /// node for every binding.
    pub fn selected<'s>(
        &'s self,
        selector: Option<&'s LabelSelector>,
    ) -> impl Iterator<Item = (&'a Node, &'a str)> + 's {
        let candidates: Box<dyn Iterator<Item = &(&'a Node, Option<&'a str>)> + 's> =
            match selector.and_then(|s| s.match_labels.iter().next()) {
                Some((key, value)) => Box::new(
                    self.labelled
                        .get(key.as_str())
                        .and_then(|values| values.get(value.as_str()))
                        .into_iter()
                        .flatten()
                        .map(|at| &self.instances[*at]),
                ),
                None => Box::new(self.instances.iter()),
            };
        candidates
            .filter(move |(node, _)| selector.is_none_or(|s| s.matches(&node.labels)))
            .filter_map(|(node, instance)| Some((*node, (*instance)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::Taint;
    use crate::pure::binding::selector::LabelSelectorRequirement;
    use std::collections::BTreeMap;

    fn node(name: &str, labels: &[(&str, &str)], ready: &str, provider: Option<&str>) -> Node {
        Node {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: vec![],
            ready: Some(ready.into()),
            provider_id: provider.map(str::to_string),
            internal_ips: vec![],
        }
    }

    fn nodes() -> Vec<Node> {
        let mut tainted = node("tainted", &[("pool", "a")], "True", Some("aws:///z/i-t"));
        tainted.taints.push(Taint {
            key: "karpenter.sh/disrupted".into(),
            effect: "NoSchedule".into(),
        });
        vec![
            node(
                "a1",
                &[("pool", "a"), ("zone", "z1")],
                "True",
                Some("aws:///z/i-a1"),
            ),
            node(
                "b1",
                &[("pool", "b"), ("zone", "z1")],
                "True",
                Some("aws:///z/i-b1"),
            ),
            node(
                "a2",
                &[("pool", "a"), ("zone", "z2")],
                "True",
                Some("aws:///z/i-a2"),
            ),
            node("a-down", &[("pool", "a")], "False", Some("aws:///z/i-ad")),
            node("a-bare", &[("pool", "a")], "True", None),
            tainted,
            node("plain", &[], "True", Some("aws:///z/i-p")),
        ]
    }

    fn selector(labels: &[(&str, &str)], expressions: &[(&str, &str, &[&str])]) -> LabelSelector {
        LabelSelector {
            match_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            match_expressions: expressions
                .iter()
                .map(|(key, operator, values)| LabelSelectorRequirement {
                    key: key.to_string(),
                    operator: operator.to_string(),
                    values: values.iter().map(|v| v.to_string()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn selected_nodes_are_exactly_those_a_scan_of_every_node_finds_eligible() {
        let snapshot = ClusterSnapshot {
            nodes: nodes(),
            ..Default::default()
        };
        let view = ClusterView::of(&snapshot);
        let cases: Vec<(&str, Option<LabelSelector>, Vec<&str>)> = vec![
            (
                "no selector takes every eligible node",
                None,
                vec!["a1", "b1", "a2", "plain"],
            ),
            (
                "one label takes its eligible nodes in snapshot order",
                Some(selector(&[("pool", "a")], &[])),
                vec!["a1", "a2"],
            ),
            (
                "every label of the selector must match",
                Some(selector(&[("pool", "a"), ("zone", "z2")], &[])),
                vec!["a2"],
            ),
            (
                "a label no node carries selects nothing",
                Some(selector(&[("pool", "c")], &[])),
                vec![],
            ),
            (
                "expressions alone are checked on every node",
                Some(selector(&[], &[("zone", "In", &["z1"])])),
                vec!["a1", "b1"],
            ),
            (
                "labels and expressions together",
                Some(selector(&[("pool", "a")], &[("zone", "NotIn", &["z1"])])),
                vec!["a2"],
            ),
        ];
        for (name, selector, expected) in cases {
            let selected: Vec<&str> = view
                .selected(selector.as_ref())
                .map(|(node, _)| &*node.name)
                .collect();
            let scanned: Vec<&str> = snapshot
                .nodes
                .iter()
                .filter(|n| nodes::eligible_instance(n, selector.as_ref()).is_ok())
                .map(|n| &*n.name)
                .collect();
            assert_eq!(selected, expected, "{name}");
            assert_eq!(selected, scanned, "{name}: the view and the scan disagree");
        }
    }

    #[test]
    fn lookups_find_what_a_scan_finds_first() {
        let service = |namespace: &str, name: &str, service_type: &str| Service {
            namespace: namespace.into(),
            name: name.into(),
            service_type: service_type.into(),
            ports: vec![],
        };
        let slice = |namespace: &str, name: &str, service: Option<&str>| EndpointSlice {
            namespace: namespace.into(),
            name: name.into(),
            service_name: service.map(str::to_string),
            address_type: "IPv4".into(),
            ports: vec![],
            endpoints: vec![],
        };
        let snapshot = ClusterSnapshot {
            services: vec![
                service("default", "web", "ClusterIP"),
                service("other", "web", "NodePort"),
                service("default", "web", "LoadBalancer"),
            ],
            endpoint_slices: vec![
                slice("default", "web-1", Some("web")),
                slice("other", "web-x", Some("web")),
                slice("default", "orphan", None),
                slice("default", "web-2", Some("web")),
            ],
            nodes: nodes(),
            ..Default::default()
        };
        let view = ClusterView::of(&snapshot);
        let found = |namespace, name| {
            view.service(namespace, name)
                .map(|s| s.service_type.as_str())
        };
        assert_eq!(
            found("default", "web"),
            Some("ClusterIP"),
            "the first of two wins"
        );
        assert_eq!(
            found("other", "web"),
            Some("NodePort"),
            "namespaces are apart"
        );
        assert_eq!(
            found("default", "api"),
            None,
            "a missing Service is missing"
        );
        let names = |namespace, service| -> Vec<&str> {
            view.slices_of(namespace, service)
                .iter()
                .map(|s| &*s.name)
                .collect()
        };
        assert_eq!(
            names("default", "web"),
            ["web-1", "web-2"],
            "in snapshot order"
        );
        assert_eq!(names("other", "web"), ["web-x"]);
        assert!(
            names("default", "orphan").is_empty(),
            "a slice of no Service is nobody's"
        );
        assert_eq!(view.node("a2").map(|n| &*n.name), Some("a2"));
        assert!(view.node("gone").is_none());
    }
}
