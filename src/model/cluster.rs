//! What the Kubernetes API told us about one cluster, as plain values.
//! The kube adapter fills these; desire reads them.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One read of everything a cluster contributes to desired state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterSnapshot {
    /// `TargetGroupBinding` resources as they came from the API (parsed later, one by one,
    /// so that one malformed resource fails alone).
    pub binding_resources: Vec<BindingResource>,
    /// False when the cluster has no TargetGroupBinding CRD: the list above is then empty
    /// without proving that bindings recorded earlier were deleted.
    pub binding_crd_installed: bool,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub nodes: Vec<Node>,
    /// Pods, for what only they know: container port names, and their readiness gates.
    pub pods: Vec<Pod>,
}

/// A `TargetGroupBinding` before validation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindingResource {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub annotations: BTreeMap<String, String>,
    /// `spec` exactly as served.
    pub spec: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`.
    pub service_type: String,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub node_port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: Arc<str>,
    /// The `kubernetes.io/service-name` label.
    pub service_name: Option<String>,
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: Option<i32>,
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Shared: an ip target's id is its endpoint's address.
    pub addresses: Vec<Arc<str>>,
    /// `None` means unknown, which Kubernetes asks clients to treat as ready.
    pub ready: Option<bool>,
    pub terminating: Option<bool>,
    pub node_name: Option<String>,
    /// `namespace/name` of the pod behind the endpoint, when known.
    pub pod: Option<Arc<str>>,
}

impl Endpoint {
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating.unwrap_or(false)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: Arc<str>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// The status of the `Ready` condition: `True`, `False`, `Unknown`, or absent.
    pub ready: Option<String>,
    pub provider_id: Option<String>,
    pub internal_ips: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Taint {
    pub key: String,
    pub effect: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub container_ports: Vec<ContainerPort>,
    /// Whether the `ContainersReady` condition is `True`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub containers_ready: bool,
    /// Whether the pod is being deleted (`metadata.deletionTimestamp` is set).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminating: bool,
    /// `spec.readinessGates`, each with its condition as the pod's status has it now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<ReadinessGate>,
}

impl Pod {
    /// `namespace/name`, as endpoints name their pod.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod's gate of this condition type, if it declares one.
    pub fn gate(&self, condition_type: &str) -> Option<&ReadinessGate> {
        self.gates
            .iter()
            .find(|g| g.condition_type == condition_type)
    }
}

/// One readiness gate of a pod: the condition type it waits on, and that condition now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessGate {
    pub condition_type: String,
    /// `None` while no condition of that type exists (the pod is then not Ready).
    pub condition: Option<GateCondition>,
}

/// A pod condition as a readiness gate sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GateCondition {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: i32,
    /// `TCP` unless the pod says otherwise.
    pub protocol: String,
}
