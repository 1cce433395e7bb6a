//! Reads one cluster through the Kubernetes API (kube + k8s-openapi) into plain values: one
//! paginated list per kind, all namespaces.

use crate::error::{Error, Result};
use crate::model::BindingSource;
use crate::model::cluster::ClusterSnapshot;
use crate::model::cluster::{
    BindingResource, ContainerPort, Endpoint, EndpointPort, EndpointSlice, GateCondition, Node,
    Pod, ReadinessGate, Service, ServicePort, Taint,
};
use crate::ports::EndpointSource;
use crate::pure::binding::resource;
use crate::pure::plan::GateChange;
use crate::state::status::BindingStatus;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::api::{Api, ListParams, ObjectList, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;

const PAGE_SIZE: u32 = 500;
const MAX_PAGES: usize = 10_000;
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub struct KubeEndpointSource {
    client: kube::Client,
    cluster: String,
}

impl KubeEndpointSource {
    pub fn new(client: kube::Client, cluster: &str) -> Self {
        Self {
            client,
            cluster: cluster.to_string(),
        }
    }

    /// Every object of a kind, each turned into its plain value as its page arrives: a page's
    /// API objects are dropped before the next is read, so a run never holds the whole
    /// cluster as API objects.
    async fn list_all<K, T>(
        &self,
        api: Api<K>,
        kind: &'static str,
        project: impl Fn(K) -> T,
    ) -> Result<Vec<T>>
    where
        K: Clone + DeserializeOwned + Debug,
    {
        let mut items = Vec::new();
        let mut params = ListParams::default().limit(PAGE_SIZE);
        for _ in 0..MAX_PAGES {
            let page: ObjectList<K> =
                api.list(&params)
                    .await
                    .map_err(|e| Error::ListClusterResources {
                        cluster: self.cluster.clone(),
                        kind,
                        source: Box::new(e),
                    })?;
            items.extend(page.items.into_iter().map(&project));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(items),
            }
        }
        Err(Error::ListClusterResources {
            cluster: self.cluster.clone(),
            kind,
            source: format!("more than {MAX_PAGES} pages").into(),
        })
    }

    /// The TargetGroupBinding resources, and whether the CRD exists at all.
    async fn binding_resources(&self) -> Result<(Vec<BindingResource>, bool)> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &binding_api());
        let resources = match self
            .list_all(api, "targetgroupbindings", binding_resource)
            .await
        {
            Ok(resources) => resources,
            // No CRD installed: the cluster declares no TargetGroupBinding.
            Err(Error::ListClusterResources { source, .. }) if matches!(source.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 404) =>
            {
                tracing::warn!(cluster = %self.cluster, "no TargetGroupBinding CRD in the cluster");
                return Ok((Vec::new(), false));
            }
            Err(e) => return Err(e),
        };
        Ok((resources, true))
    }
}

pub(super) fn binding_resource(o: DynamicObject) -> BindingResource {
    BindingResource {
        namespace: o.metadata.namespace.unwrap_or_else(|| "default".into()),
        name: o.metadata.name.unwrap_or_default(),
        generation: o.metadata.generation,
        annotations: o.metadata.annotations.unwrap_or_default(),
        spec: o
            .data
            .get("spec")
            .cloned()
            .unwrap_or(serde_json::Value::Null),
    }
}

/// The TargetGroupBinding resource type, for the dynamic client.
pub(super) fn binding_api() -> ApiResource {
    ApiResource {
        group: resource::GROUP.into(),
        version: resource::VERSION.into(),
        api_version: format!("{}/{}", resource::GROUP, resource::VERSION),
        kind: resource::KIND.into(),
        plural: resource::PLURAL.into(),
    }
}

impl EndpointSource for KubeEndpointSource {
    async fn publish_status(&self, status: &BindingStatus) -> Result<()> {
        let BindingSource::Resource { namespace, name } = status.binding.source() else {
            return Ok(());
        };
        let now = now_text();
        let patch = serde_json::json!({"status": {
            "observedGeneration": status.observed_generation,
            "conditions": [{
                "type": "Ready",
                "status": if status.ready { "True" } else { "False" },
                "reason": status.reason.as_str(),
                "message": status.message,
                "lastTransitionTime": now,
                "observedGeneration": status.observed_generation,
            }],
        }});
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &binding_api());
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::PublishStatus {
                binding: status.binding.clone(),
                source: Box::new(e),
            })?;
        Ok(())
    }

    async fn set_pod_condition(&self, change: &GateChange) -> Result<()> {
        let (namespace, name) = change.pod.split_once('/').unwrap_or(("", &change.pod));
        let wanted = &change.condition;
        // Absent fields are written as null: a strategic merge keeps what it is not told
        // to remove, and a passing gate must not keep the reason it failed with.
        let mut condition = serde_json::json!({
            "type": change.condition_type,
            "status": wanted.status,
            "reason": wanted.reason,
            "message": wanted.message,
        });
        if change.is_transition() {
            condition["lastTransitionTime"] = now_text().into();
        }
        // A strategic merge patch merges `conditions` by `type`: the kubelet's stay as they are.
        let patch = serde_json::json!({"status": {"conditions": [condition]}});
        let api: Api<core::Pod> = Api::namespaced(self.client.clone(), namespace);
        let error = match api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let (pod, condition_type) = (change.pod.clone(), change.condition_type.clone());
        let code = match &error {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        };
        Err(match code {
            Some(404) => Error::PodNotFound {
                pod,
                condition_type,
            },
            Some(403) => Error::PodStatusForbidden {
                pod,
                condition_type,
                source: Box::new(error),
            },
            _ => Error::SetPodCondition {
                pod,
                condition_type,
                source: Box::new(error),
            },
        })
    }

    async fn snapshot(&self) -> Result<Arc<ClusterSnapshot>> {
        let (binding_resources, binding_crd_installed) = self.binding_resources().await?;
        let services = self
            .list_all(
                Api::<core::Service>::all(self.client.clone()),
                "services",
                service,
            )
            .await?;
        let endpoint_slices = self
            .list_all(
                Api::<discovery::EndpointSlice>::all(self.client.clone()),
                "endpointslices",
                endpoint_slice,
            )
            .await?;
        let nodes = self
            .list_all(Api::<core::Node>::all(self.client.clone()), "nodes", node)
            .await?;
        let pods = self
            .list_all(Api::<core::Pod>::all(self.client.clone()), "pods", pod)
            .await?;
        Ok(Arc::new(ClusterSnapshot {
            pods,
            binding_resources,
            binding_crd_installed,
            services,
            endpoint_slices,
            nodes,
        }))
    }
}

/// The time now as Kubernetes writes it (RFC 3339).
fn now_text() -> String {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

pub(super) fn service(s: core::Service) -> Service {
    let spec = s.spec.unwrap_or_default();
    Service {
        namespace: s.metadata.namespace.unwrap_or_default(),
        name: s.metadata.name.unwrap_or_default(),
        service_type: spec.type_.unwrap_or_else(|| "ClusterIP".into()),
        ports: spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| ServicePort {
                name: p.name.filter(|n| !n.is_empty()),
                port: p.port,
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                node_port: p.node_port,
            })
            .collect(),
    }
}

pub(super) fn endpoint_slice(s: discovery::EndpointSlice) -> EndpointSlice {
    let labels = s.metadata.labels.unwrap_or_default();
    EndpointSlice {
        namespace: s.metadata.namespace.unwrap_or_default(),
        name: s.metadata.name.unwrap_or_default().into(),
        service_name: labels.get(SERVICE_NAME_LABEL).cloned(),
        address_type: s.address_type,
        ports: s
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| EndpointPort {
                name: p.name,
                port: p.port,
                protocol: p.protocol,
            })
            .collect(),
        endpoints: s
            .endpoints
            .into_iter()
            .map(|e| {
                let conditions = e.conditions.unwrap_or_default();
                Endpoint {
                    addresses: e.addresses.into_iter().map(Arc::from).collect(),
                    ready: conditions.ready,
                    terminating: conditions.terminating,
                    node_name: e.node_name,
                    pod: e
                        .target_ref
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .map(|r| {
                            format!(
                                "{}/{}",
                                r.namespace.unwrap_or_default(),
                                r.name.unwrap_or_default()
                            )
                            .into()
                        }),
                }
            })
            .collect(),
    }
}

pub(super) fn node(n: core::Node) -> Node {
    let status = n.status.unwrap_or_default();
    let spec = n.spec.unwrap_or_default();
    Node {
        name: n.metadata.name.unwrap_or_default().into(),
        labels: n.metadata.labels.unwrap_or_default(),
        taints: spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| Taint {
                key: t.key,
                effect: t.effect,
            })
            .collect(),
        ready: status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status),
        provider_id: spec.provider_id,
        internal_ips: status
            .addresses
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .collect(),
    }
}

pub(super) fn pod(p: core::Pod) -> Pod {
    let spec = p.spec.unwrap_or_default();
    let conditions = p.status.and_then(|s| s.conditions).unwrap_or_default();
    let condition = |condition_type: &str| conditions.iter().find(|c| c.type_ == condition_type);
    let gates = spec
        .readiness_gates
        .unwrap_or_default()
        .into_iter()
        .map(|gate| ReadinessGate {
            condition: condition(&gate.condition_type).map(|c| GateCondition {
                status: c.status.clone(),
                reason: c.reason.clone().filter(|r| !r.is_empty()),
                message: c.message.clone().filter(|m| !m.is_empty()),
            }),
            condition_type: gate.condition_type,
        })
        .collect();
    // Only what runs beside the pod serves its ports: the containers, and init containers that
    // restart always (sidecars). A plain init container has exited before the pod runs.
    let sidecars = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let containers = spec.containers.into_iter().chain(sidecars);
    Pod {
        containers_ready: condition("ContainersReady").is_some_and(|c| c.status == "True"),
        terminating: p.metadata.deletion_timestamp.is_some(),
        gates,
        namespace: p.metadata.namespace.unwrap_or_default(),
        name: p.metadata.name.unwrap_or_default(),
        container_ports: containers
            .flat_map(|c| c.ports.unwrap_or_default())
            .map(|port| ContainerPort {
                name: port.name.filter(|n| !n.is_empty()),
                port: port.container_port,
                protocol: port.protocol.unwrap_or_else(|| "TCP".into()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_containers_and_sidecars_serve_a_pods_ports() {
        let pod_json = json!({
            "metadata": {"namespace": "default", "name": "web-1"},
            "spec": {
                "initContainers": [
                    {"name": "migrate", "image": "m", "ports": [{"name": "setup", "containerPort": 9000}]},
                    {"name": "once", "image": "o", "restartPolicy": "OnFailure",
                        "ports": [{"name": "also-gone", "containerPort": 9001}]},
                    {"name": "proxy", "image": "p", "restartPolicy": "Always",
                        "ports": [{"name": "proxy", "containerPort": 15001}]}
                ],
                "containers": [
                    {"name": "app", "image": "a", "ports": [
                        {"name": "http", "containerPort": 8080},
                        {"name": "dns", "containerPort": 53, "protocol": "UDP"}
                    ]}
                ]
            }
        });
        let parsed: core::Pod = serde_json::from_value(pod_json).expect("a pod");
        let ports: Vec<(Option<String>, i32, String)> = pod(parsed)
            .container_ports
            .into_iter()
            .map(|p| (p.name, p.port, p.protocol))
            .collect();
        assert_eq!(
            ports,
            [
                (Some("http".into()), 8080, "TCP".into()),
                (Some("dns".into()), 53, "UDP".into()),
                (Some("proxy".into()), 15001, "TCP".into()),
            ]
        );
    }

    #[test]
    fn a_pods_readiness_gates_are_read_with_their_conditions_containers_and_deletion() {
        let gate = |t: &str| GateCondition {
            status: t.into(),
            reason: None,
            message: None,
        };
        let pod_json = |metadata: serde_json::Value, conditions: serde_json::Value| {
            json!({
                "metadata": metadata,
                "spec": {
                    "containers": [{"name": "app", "image": "a"}],
                    "readinessGates": [
                        {"conditionType": "target-health.elbv2.k8s.aws/web"},
                        {"conditionType": "target-health.elbv2.k8s.aws/api"},
                        {"conditionType": "target-health.tgb-reconciler/shop"},
                        {"conditionType": "example.com/none-yet"}
                    ]
                },
                "status": {"conditions": conditions}
            })
        };
        let metadata = json!({"namespace": "default", "name": "web-1"});
        let conditions = json!([
            {"type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "target-health.elbv2.k8s.aws/web", "status": "False",
                "reason": "Elb.InitialHealthChecking",
                "message": "Initial health checks in progress"},
            {"type": "target-health.elbv2.k8s.aws/api", "status": "True",
                "reason": "", "message": ""},
            {"type": "target-health.tgb-reconciler/shop", "status": "Unknown",
                "message": "only a message"}
        ]);
        let parsed: core::Pod =
            serde_json::from_value(pod_json(metadata.clone(), conditions)).expect("a pod");
        let read = pod(parsed);
        assert!(read.containers_ready);
        assert!(!read.terminating);
        assert_eq!(
            read.gates,
            [
                ReadinessGate {
                    condition_type: "target-health.elbv2.k8s.aws/web".into(),
                    condition: Some(GateCondition {
                        reason: Some("Elb.InitialHealthChecking".into()),
                        message: Some("Initial health checks in progress".into()),
                        ..gate("False")
                    }),
                },
                ReadinessGate {
                    condition_type: "target-health.elbv2.k8s.aws/api".into(),
                    condition: Some(gate("True")),
                },
                ReadinessGate {
                    condition_type: "target-health.tgb-reconciler/shop".into(),
                    condition: Some(GateCondition {
                        message: Some("only a message".into()),
                        ..gate("Unknown")
                    }),
                },
                ReadinessGate {
                    condition_type: "example.com/none-yet".into(),
                    condition: None,
                },
            ]
        );

        // (case, metadata, conditions, containers ready, terminating)
        let deleting = json!({"namespace": "default", "name": "web-1",
            "deletionTimestamp": "2026-12-02T16:28:40Z"});
        let cases = [
            (
                "no conditions yet",
                metadata.clone(),
                json!([]),
                false,
                false,
            ),
            (
                "containers not ready",
                metadata.clone(),
                json!([{"type": "ContainersReady", "status": "False"}]),
                false,
                false,
            ),
            (
                "containers ready unknown",
                metadata.clone(),
                json!([{"type": "ContainersReady", "status": "Unknown"}]),
                false,
                false,
            ),
            (
                "Ready alone is not ContainersReady",
                metadata.clone(),
                json!([{"type": "Ready", "status": "True"}]),
                false,
                false,
            ),
            (
                "being deleted",
                deleting,
                json!([{"type": "ContainersReady", "status": "True"}]),
                true,
                true,
            ),
        ];
        for (case, metadata, conditions, containers_ready, terminating) in cases {
            let parsed: core::Pod =
                serde_json::from_value(pod_json(metadata, conditions)).expect(case);
            let read = pod(parsed);
            assert_eq!(read.containers_ready, containers_ready, "{case}");
            assert_eq!(read.terminating, terminating, "{case}");
            assert_eq!(read.gates.len(), 4, "{case}");
        }
    }

    #[test]
    fn a_pod_without_readiness_gates_has_none() {
        let parsed: core::Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web-1"},
            "spec": {"containers": [{"name": "app", "image": "a"}]},
            "status": {"conditions": [
                {"type": "target-health.elbv2.k8s.aws/web", "status": "True"}
            ]}
        }))
        .expect("a pod");
        assert_eq!(pod(parsed).gates, []);
    }
}
