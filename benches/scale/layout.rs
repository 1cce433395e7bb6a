//! The shape of a benchmark cluster, whatever serves it: node groups of nodes, each node in its
//! own security group, and per group as many instance bindings (NodePort) as ip bindings (one
//! pod on every node of the group). Every binding admits the ALB's group on its port, so each
//! node group carries contiguous port ranges that merge into two rules per security group.
//!
//! The same layout becomes Kubernetes objects for the test API server, or plain values for the
//! in-memory ports of the planning benchmark.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use tgb_reconciler::model::cluster::{
    BindingResource, ClusterSnapshot, ContainerPort, Endpoint, EndpointPort, EndpointSlice, Node,
    Pod, Service, ServicePort,
};

pub const NAMESPACE: &str = "default";
pub const GROUP_LABEL: &str = "tgb-bench/group";
pub const ZONES: [&str; 2] = ["us-west-2a", "us-west-2b"];
const FIRST_NODE_PORT: usize = 30000;
const FIRST_POD_PORT: usize = 8000;
/// Pod IPs: inside the VPC (192.168.0.0/16), outside the node subnets.
const POD_IP_BASE: Ipv4Addr = Ipv4Addr::new(192, 168, 128, 0);

#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub node_groups: usize,
    pub nodes_per_group: usize,
    /// Even: half instance, half ip bindings.
    pub bindings_per_group: usize,
}

impl Scale {
    pub fn nodes(&self) -> usize {
        self.node_groups * self.nodes_per_group
    }
    pub fn bindings(&self) -> usize {
        self.node_groups * self.bindings_per_group
    }
    /// Every binding has one target per node of its group.
    pub fn targets(&self) -> usize {
        self.bindings() * self.nodes_per_group
    }
    pub fn security_groups(&self) -> usize {
        self.nodes()
    }
    pub fn describe(&self) -> String {
        format!(
            "{} bindings, {} targets, {} security groups ({} nodes in {} groups)",
            self.bindings(),
            self.targets(),
            self.security_groups(),
            self.nodes(),
            self.node_groups
        )
    }
}

/// One node as the cloud knows it.
#[derive(Debug, Clone)]
pub struct NodeIds {
    pub instance: String,
    pub eni: String,
    pub ip: String,
    pub security_group: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Instance,
    Ip,
}

pub struct Layout {
    pub scale: Scale,
    pub nodes: Vec<NodeIds>,
    /// One per binding, in binding order.
    pub target_groups: Vec<String>,
    pub alb_security_group: String,
}

impl Layout {
    pub fn node_name(n: usize) -> String {
        format!("node-{n:04}")
    }
    pub fn binding_name(b: usize) -> String {
        format!("b-{b:04}")
    }
    pub fn service_name(b: usize) -> String {
        format!("svc-{b:04}")
    }
    pub fn group_of(&self, b: usize) -> usize {
        b / self.scale.bindings_per_group
    }
    pub fn kind(&self, b: usize) -> Kind {
        if b % self.scale.bindings_per_group < self.scale.bindings_per_group / 2 {
            Kind::Instance
        } else {
            Kind::Ip
        }
    }
    /// The port the load balancer sends to: the NodePort, or the pods' port.
    pub fn port(&self, b: usize) -> u16 {
        let base = match self.kind(b) {
            Kind::Instance => FIRST_NODE_PORT,
            Kind::Ip => FIRST_POD_PORT,
        };
        u16::try_from(base + b).unwrap_or(u16::MAX)
    }
    /// The nodes of a node group, by index.
    pub fn nodes_of(&self, group: usize) -> std::ops::Range<usize> {
        let n = self.scale.nodes_per_group;
        group * n..(group + 1) * n
    }
    pub fn zone(n: usize) -> &'static str {
        ZONES[n % ZONES.len()]
    }
    /// The pod of ip binding `b` on node `n`: its name and IP.
    pub fn pod(&self, b: usize, n: usize) -> (String, String) {
        let offset = b * self.scale.nodes_per_group + n % self.scale.nodes_per_group;
        let ip = u32::from(POD_IP_BASE) + u32::try_from(offset).unwrap_or(u32::MAX);
        (
            format!("{}-{}", Self::binding_name(b), n),
            Ipv4Addr::from(ip).to_string(),
        )
    }
    /// Every pod IP on node `n`.
    pub fn pod_ips_on(&self, n: usize) -> Vec<String> {
        let group = n / self.scale.nodes_per_group;
        self.bindings_of(group)
            .filter(|b| self.kind(*b) == Kind::Ip)
            .map(|b| self.pod(b, n).1)
            .collect()
    }
    pub fn bindings_of(&self, group: usize) -> std::ops::Range<usize> {
        let n = self.scale.bindings_per_group;
        group * n..(group + 1) * n
    }
    fn pods_of(&self, b: usize) -> impl Iterator<Item = (usize, String, String)> + '_ {
        self.nodes_of(self.group_of(b)).map(move |n| {
            let (name, ip) = self.pod(b, n);
            (n, name, ip)
        })
    }

    /// The `TargetGroupBinding` spec of binding `b`, in the seeds' format.
    pub fn binding_spec(&self, b: usize) -> Value {
        let mut spec = json!({
            "serviceRef": {"name": Self::service_name(b), "port": 80},
            "targetGroupARN": self.target_groups[b],
            "networking": {"ingress": [{
                "from": [{"securityGroup": {"groupID": self.alb_security_group}}],
                "ports": [{"protocol": "TCP", "port": self.port(b)}],
            }]},
        });
        if self.kind(b) == Kind::Instance {
            spec["targetType"] = json!("instance");
            spec["nodeSelector"] =
                json!({"matchLabels": {GROUP_LABEL: format!("g{}", self.group_of(b))}});
        } else {
            spec["targetType"] = json!("ip");
        }
        spec
    }

    /// Everything the cluster holds besides nodes, as API objects (one `List`, applied at once).
    pub fn cluster_objects(&self) -> Value {
        let mut items = Vec::new();
        for b in 0..self.scale.bindings() {
            let (name, service) = (Self::binding_name(b), Self::service_name(b));
            items.push(json!({
                "apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
                "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1},
                "spec": self.binding_spec(b),
            }));
            let port = self.port(b);
            match self.kind(b) {
                Kind::Instance => items.push(json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": service, "namespace": NAMESPACE},
                    "spec": {"type": "NodePort", "ports": [
                        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": port}
                    ]},
                })),
                Kind::Ip => {
                    // No selector: the slice below is the Service's, as written.
                    items.push(json!({
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": service, "namespace": NAMESPACE},
                        "spec": {"type": "ClusterIP", "ports": [
                            {"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}
                        ]},
                    }));
                    for (n, pod, ip) in self.pods_of(b) {
                        items.push(json!({
                            "apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": pod, "namespace": NAMESPACE},
                            "spec": {"nodeName": Self::node_name(n), "containers": [
                                {"name": "app", "image": "nginx", "ports": [{"name": "http", "containerPort": port}]}
                            ]},
                            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
                        }));
                    }
                    items.push(self.endpoint_slice(b, None));
                }
            }
        }
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    /// The EndpointSlice of ip binding `b`'s Service, every endpoint ready but `not_ready`.
    pub fn endpoint_slice(&self, b: usize, not_ready: Option<usize>) -> Value {
        let service = Self::service_name(b);
        let endpoints: Vec<Value> = self
            .pods_of(b)
            .enumerate()
            .map(|(i, (n, pod, ip))| {
                json!({
                    "addresses": [ip], "conditions": {"ready": not_ready != Some(i)},
                    "nodeName": Self::node_name(n),
                    "targetRef": {"kind": "Pod", "namespace": NAMESPACE, "name": pod},
                })
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": Self::slice_name(b), "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": self.port(b), "protocol": "TCP"}],
            "endpoints": endpoints,
        })
    }

    /// The name of ip binding `b`'s EndpointSlice.
    pub fn slice_name(b: usize) -> String {
        format!("{}-1", Self::service_name(b))
    }

    /// What the kube adapter would read from [`Layout::cluster_objects`] and the nodes.
    pub fn snapshot(&self) -> ClusterSnapshot {
        let mut snapshot = ClusterSnapshot {
            binding_crd_installed: true,
            ..ClusterSnapshot::default()
        };
        for (n, node) in self.nodes.iter().enumerate() {
            snapshot.nodes.push(Node {
                name: Self::node_name(n).into(),
                labels: BTreeMap::from([
                    (
                        GROUP_LABEL.to_string(),
                        format!("g{}", n / self.scale.nodes_per_group),
                    ),
                    (
                        "topology.kubernetes.io/zone".to_string(),
                        Self::zone(n).to_string(),
                    ),
                ]),
                taints: Vec::new(),
                ready: Some("True".into()),
                provider_id: Some(format!("aws:///{}/{}", Self::zone(n), node.instance)),
                internal_ips: vec![node.ip.clone()],
            });
        }
        for b in 0..self.scale.bindings() {
            let (name, service) = (Self::binding_name(b), Self::service_name(b));
            snapshot.binding_resources.push(BindingResource {
                namespace: NAMESPACE.into(),
                name,
                generation: Some(1),
                annotations: BTreeMap::new(),
                spec: self.binding_spec(b),
            });
            let port = i32::from(self.port(b));
            let (service_type, node_port) = match self.kind(b) {
                Kind::Instance => ("NodePort", Some(port)),
                Kind::Ip => ("ClusterIP", None),
            };
            snapshot.services.push(Service {
                namespace: NAMESPACE.into(),
                name: service.clone(),
                service_type: service_type.into(),
                ports: vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: "TCP".into(),
                    node_port,
                }],
            });
            if self.kind(b) == Kind::Instance {
                continue;
            }
            let mut endpoints = Vec::new();
            for (n, pod, ip) in self.pods_of(b) {
                endpoints.push(Endpoint {
                    addresses: vec![ip.into()],
                    ready: Some(true),
                    terminating: None,
                    node_name: Some(Self::node_name(n)),
                    pod: Some(format!("{NAMESPACE}/{pod}").into()),
                });
                snapshot.pods.push(Pod {
                    namespace: NAMESPACE.into(),
                    name: pod,
                    container_ports: vec![ContainerPort {
                        name: Some("http".into()),
                        port,
                        protocol: "TCP".into(),
                    }],
                    containers_ready: true,
                    terminating: false,
                    gates: Vec::new(),
                });
            }
            snapshot.endpoint_slices.push(EndpointSlice {
                namespace: NAMESPACE.into(),
                name: Self::slice_name(b).into(),
                service_name: Some(service),
                address_type: "IPv4".into(),
                ports: vec![EndpointPort {
                    name: Some("http".into()),
                    port: Some(port),
                    protocol: Some("TCP".into()),
                }],
                endpoints,
            });
        }
        snapshot
    }
}
