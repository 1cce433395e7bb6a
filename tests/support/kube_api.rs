#![allow(dead_code)]
//! A fake Kubernetes API server for integration tests.
//!
//! It speaks the real Kubernetes REST wire format (JSON lists with `metadata.resourceVersion`,
//! `Status` error bodies, label selectors, `limit`/`continue` pagination) so the real `kube`
//! client can talk to it over plain HTTP on 127.0.0.1. Behind it sits a tiny cluster simulator:
//! Deployments get Pods, Services with a selector get EndpointSlices, recomputed after every
//! change, with hooks for readiness, termination, scaling, failures and delays. Pods with
//! `spec.readinessGates` are Ready only while their containers are ready and every gate's
//! condition is True, as the kubelet computes it.
//!
//! Include it with `#[path = "support/kube_api.rs"] mod kube_api;`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Pod IP pool used when a test does not set one.
pub const DEFAULT_POD_IP_POOL: &str = "192.168.40.0/24";
/// The bearer token written into kubeconfigs by [`KubeApi::write_kubeconfig`].
pub const TEST_TOKEN: &str = "test-token";
/// Value of `endpointslice.kubernetes.io/managed-by` on generated EndpointSlices.
pub const ENDPOINTSLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// Label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Node label carrying the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const FIRST_NODE_PORT: u64 = 30000;
const LAST_NODE_PORT: u64 = 32767;

// ---------------------------------------------------------------------------------------------
// Public handle
// ---------------------------------------------------------------------------------------------

/// A running fake API server. The server task is aborted when this is dropped.
pub struct KubeApi {
    addr: SocketAddr,
    world: Arc<Mutex<World>>,
    serving: Mutex<Serving>,
}

/// The server task of one [`KubeApi::start`] or [`KubeApi::restart`], and its stop switch.
struct Serving {
    task: tokio::task::JoinHandle<()>,
    stopped: Arc<AtomicBool>,
}

impl Serving {
    fn spawn(listener: tokio::net::TcpListener, world: &Arc<Mutex<World>>) -> Serving {
        let stopped = Arc::new(AtomicBool::new(false));
        let app = Router::new()
            .fallback(handle_request)
            .with_state(Arc::clone(world));
        let listener = StoppableListener {
            inner: listener,
            stopped: Arc::clone(&stopped),
        };
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("fake kube-apiserver stopped: {err}");
            }
        });
        Serving { task, stopped }
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node to add with [`KubeApi::add_node`].
#[derive(Clone, Debug)]
pub struct NodeFixture {
    pub name: String,
    pub instance_id: String,
    pub zone: String,
    pub internal_ip: String,
    pub ready: bool,
    pub labels: BTreeMap<String, String>,
    /// `(key, effect)` pairs, e.g. `("node.kubernetes.io/unschedulable", "NoSchedule")`.
    pub taints: Vec<(String, String)>,
    /// `None` gives `aws:///<zone>/<instance_id>`.
    pub provider_id: Option<String>,
}

impl NodeFixture {
    /// A ready node without extra labels or taints.
    pub fn new(name: &str, instance_id: &str, zone: &str, internal_ip: &str) -> Self {
        NodeFixture {
            name: name.to_owned(),
            instance_id: instance_id.to_owned(),
            zone: zone.to_owned(),
            internal_ip: internal_ip.to_owned(),
            ready: true,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            provider_id: None,
        }
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn with_taint(mut self, key: &str, effect: &str) -> Self {
        self.taints.push((key.to_owned(), effect.to_owned()));
        self
    }

    pub fn with_provider_id(mut self, provider_id: &str) -> Self {
        self.provider_id = Some(provider_id.to_owned());
        self
    }

    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }

    /// The Node object this fixture stands for.
    pub fn to_object(&self) -> Value {
        let mut labels: Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        labels.insert(ZONE_LABEL.to_owned(), Value::String(self.zone.clone()));
        let provider_id = self
            .provider_id
            .clone()
            .unwrap_or_else(|| format!("aws:///{}/{}", self.zone, self.instance_id));
        let mut spec = json!({ "providerID": provider_id });
        if !self.taints.is_empty() {
            let taints: Vec<Value> = self
                .taints
                .iter()
                .map(|(key, effect)| json!({ "key": key, "effect": effect }))
                .collect();
            spec["taints"] = Value::Array(taints);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": self.name, "labels": labels },
            "spec": spec,
            "status": {
                "conditions": [node_ready_condition(self.ready)],
                "addresses": [{ "type": "InternalIP", "address": self.internal_ip }],
            },
        })
    }
}

/// A pod applied directly by a test (no Deployment), with a fixed IP on a node, for
/// [`KubeApi::apply`]. Services selecting its labels list it in their EndpointSlices.
#[derive(Clone, Debug)]
pub struct PodFixture {
    namespace: String,
    name: String,
    ip: String,
    node: String,
    labels: Vec<(String, String)>,
    container_ports: Vec<u16>,
    gates: Vec<String>,
    containers_ready: bool,
}

impl PodFixture {
    /// A running pod whose containers are ready, without labels, ports or readiness gates.
    pub fn new(namespace: &str, name: &str, ip: &str, node: &str) -> Self {
        PodFixture {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ip: ip.to_owned(),
            node: node.to_owned(),
            labels: Vec::new(),
            container_ports: Vec::new(),
            gates: Vec::new(),
            containers_ready: true,
        }
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A TCP containerPort of the pod's one container.
    pub fn with_port(mut self, container_port: u16) -> Self {
        self.container_ports.push(container_port);
        self
    }

    /// A readiness gate (`spec.readinessGates[].conditionType`), e.g.
    /// `target-health.elbv2.k8s.aws/my-tgb`. The pod is Ready only while its containers are
    /// ready and every gate's condition is True.
    pub fn with_gate(mut self, condition_type: &str) -> Self {
        self.gates.push(condition_type.to_owned());
        self
    }

    /// Whether the containers are ready (ContainersReady; true unless set).
    pub fn containers_ready(mut self, ready: bool) -> Self {
        self.containers_ready = ready;
        self
    }

    pub fn to_object(&self) -> Value {
        let labels: Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let ports: Vec<Value> = self
            .container_ports
            .iter()
            .map(|p| json!({ "containerPort": p, "protocol": "TCP" }))
            .collect();
        let mut spec = json!({
            "nodeName": self.node,
            "containers": [{ "name": "app", "image": "app:1", "ports": ports }],
        });
        if !self.gates.is_empty() {
            spec["readinessGates"] = self
                .gates
                .iter()
                .map(|g| json!({ "conditionType": g }))
                .collect();
        }
        let mut conditions = pod_conditions(self.containers_ready, true);
        if let Value::Array(list) = &mut conditions {
            list.retain(|c| c["type"] != "Ready");
        }
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": self.name, "namespace": self.namespace, "labels": labels },
            "spec": spec,
            "status": {
                "phase": "Running",
                "conditions": conditions,
                "podIP": self.ip,
                "podIPs": [{ "ip": self.ip }],
            },
        });
        if self.gates.is_empty() {
            let ready = json!({ "type": "Ready", "status": bool_status(self.containers_ready) });
            if let Some(list) = pod["status"]["conditions"].as_array_mut() {
                list.push(ready);
            }
        } else {
            apply_readiness_gates(&mut pod);
        }
        pod
    }
}

impl KubeApi {
    /// Binds 127.0.0.1 on a free port and serves on the current tokio runtime.
    pub async fn start() -> KubeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake kube-apiserver: cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("fake kube-apiserver: no local address");
        let world = Arc::new(Mutex::new(World::new()));
        let serving = Mutex::new(Serving::spawn(listener, &world));
        KubeApi {
            addr,
            world,
            serving,
        }
    }

    /// Stops serving: open connections (kept-alive or in flight) fail at once and the port
    /// closes, so new connections are refused. Also done on drop.
    pub fn stop(&self) {
        self.serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop();
    }

    /// Serves again after [`KubeApi::stop`], on the same address and with the same cluster, as
    /// an API server back from an outage. Waits (at most five seconds) for the port to free.
    pub async fn restart(&self) {
        self.stop();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!(
                    "fake kube-apiserver: cannot bind {} again: {err}",
                    self.addr
                ),
            }
        };
        *self.serving.lock().unwrap_or_else(PoisonError::into_inner) =
            Serving::spawn(listener, &self.world);
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a kubeconfig whose cluster, user and context are all named `context_name`,
    /// pointing at this server with the bearer token [`TEST_TOKEN`].
    pub fn write_kubeconfig(&self, path: &Path, context_name: &str) {
        std::fs::write(path, self.kubeconfig_yaml(context_name)).unwrap_or_else(|err| {
            panic!(
                "fake kube-apiserver: cannot write kubeconfig {}: {err}",
                path.display()
            )
        });
    }

    /// The kubeconfig text [`KubeApi::write_kubeconfig`] writes.
    pub fn kubeconfig_yaml(&self, context_name: &str) -> String {
        // JSON strings are valid YAML double-quoted scalars.
        let name = Value::String(context_name.to_owned());
        let server = Value::String(self.url());
        let token = Value::String(TEST_TOKEN.to_owned());
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: {name}\n  cluster:\n    server: {server}\n\
             users:\n\
             - name: {name}\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\n\
             current-context: {name}\n"
        )
    }

    /// Applies a multi-document YAML stream (create or replace each object), then recomputes
    /// Pods and EndpointSlices. Documents of kind `List` apply their `items`.
    pub fn apply_yaml(&self, yaml: &str) {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap_or_else(|err| {
            panic!("fake kube-apiserver: invalid YAML manifest: {err}\n--- manifest ---\n{yaml}")
        });
        let mut world = self.lock();
        for doc in docs {
            world.apply_document(doc);
        }
        world.reconcile();
    }

    /// Applies one object (create or replace), then recomputes.
    pub fn apply(&self, object: Value) {
        let mut world = self.lock();
        world.apply_document(object);
        world.reconcile();
    }

    /// Deletes an object by kind (`"Service"`, `"Pod"`, `"TargetGroupBinding"`, ...).
    /// `namespace` is ignored for cluster-scoped kinds and defaults to `default` otherwise.
    /// Panics when the kind is unknown or the object does not exist.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) {
        let mut world = self.lock();
        let rt = world
            .type_by_kind(kind)
            .unwrap_or_else(|| panic!("fake kube-apiserver: unknown kind {kind:?}"));
        let namespace = if rt.namespaced {
            namespace.unwrap_or("default").to_owned()
        } else {
            String::new()
        };
        let key = Key::new(&rt.api_version(), &rt.kind, &namespace, name);
        if world.remove(&key).is_none() {
            panic!("fake kube-apiserver: no {kind} {namespace}/{name} to delete");
        }
        world.reconcile();
    }

    /// Looks up one object by kind; `namespace` as for [`KubeApi::delete`].
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let world = self.lock();
        let rt = world.type_by_kind(kind)?;
        let namespace = if rt.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        world
            .objects
            .get(&Key::new(&rt.api_version(), &rt.kind, namespace, name))
            .cloned()
    }

    /// All objects of a kind, in one namespace or (None) everywhere, sorted by namespace/name.
    pub fn list(&self, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let world = self.lock();
        world
            .objects
            .iter()
            .filter(|(key, _)| key.kind == kind && namespace.is_none_or(|ns| key.namespace == ns))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Teaches the server a resource type it does not know yet (built in: Node, Namespace,
    /// Service, Pod, Endpoints, ConfigMap, Secret, Event, EndpointSlice, Deployment, Lease,
    /// TargetGroupBinding).
    pub fn register_kind(&self, api_version: &str, kind: &str, plural: &str, namespaced: bool) {
        self.lock()
            .register(ResourceType::new(api_version, kind, plural, namespaced));
    }

    /// Adds (or replaces) a node.
    pub fn add_node(&self, node: NodeFixture) {
        self.apply(node.to_object());
    }

    /// Sets the node's `Ready` condition. Pods on the node are not changed.
    pub fn set_node_ready(&self, name: &str, ready: bool) {
        let mut world = self.lock();
        let key = Key::new("v1", "Node", "", name);
        let mut node = world
            .objects
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("fake kube-apiserver: no node {name:?}"));
        let mut conditions: Vec<Value> = node["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c["type"] != "Ready");
        conditions.push(node_ready_condition(ready));
        node["status"]["conditions"] = Value::Array(conditions);
        world.store(node);
        world.reconcile();
    }

    /// Sets `spec.replicas` of a Deployment.
    pub fn scale(&self, namespace: &str, deployment: &str, replicas: u32) {
        let mut world = self.lock();
        let key = Key::new("apps/v1", "Deployment", namespace, deployment);
        let mut object = world.objects.get(&key).cloned().unwrap_or_else(|| {
            panic!("fake kube-apiserver: no Deployment {namespace}/{deployment} to scale")
        });
        object["spec"]["replicas"] = json!(replicas);
        world.store(object);
        world.reconcile();
    }

    /// Overrides whether the pod's containers are ready; survives recomputation while the pod
    /// lives. Without readiness gates that is its Ready condition; with gates it sets
    /// ContainersReady and Ready follows the gates (see [`PodFixture::with_gate`]).
    pub fn set_pod_ready(&self, namespace: &str, pod: &str, ready: bool) {
        let mut world = self.lock();
        world.expect_pod(namespace, pod);
        world
            .pod_overrides
            .entry((namespace.to_owned(), pod.to_owned()))
            .or_default()
            .ready = Some(ready);
        world.reconcile();
    }

    /// Marks the pod as terminating (`metadata.deletionTimestamp`); it stays listed.
    pub fn set_pod_terminating(&self, namespace: &str, pod: &str) {
        let mut world = self.lock();
        world.expect_pod(namespace, pod);
        let overrides = world
            .pod_overrides
            .entry((namespace.to_owned(), pod.to_owned()))
            .or_default();
        if overrides.deletion_timestamp.is_none() {
            overrides.deletion_timestamp = Some(now_timestamp());
        }
        world.reconcile();
    }

    /// Sets the IPv4 CIDR that non-hostNetwork pods get their IPs from. Pods that already
    /// have an IP keep it.
    pub fn set_pod_ip_pool(&self, cidr: &str) {
        let pool = Ipv4Pool::parse(cidr)
            .unwrap_or_else(|err| panic!("fake kube-apiserver: bad pod IP pool {cidr:?}: {err}"));
        let mut world = self.lock();
        world.pod_ip_pool = pool;
        world.reconcile();
    }

    /// The pod's `status.conditions` entry of type `ty`, if it has one.
    pub fn pod_condition(&self, namespace: &str, pod: &str, ty: &str) -> Option<Value> {
        let world = self.lock();
        world.objects.get(&Key::pod(namespace, pod))?["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == ty)
            .cloned()
    }

    /// Pods of a namespace, sorted by name.
    pub fn pods(&self, namespace: &str) -> Vec<Value> {
        self.list("Pod", Some(namespace))
    }

    /// EndpointSlices of a namespace, sorted by name.
    pub fn endpoint_slices(&self, namespace: &str) -> Vec<Value> {
        self.list("EndpointSlice", Some(namespace))
    }

    /// `Some(code)`: every request answers `code` with a proper Status body; `None`: normal.
    pub fn fail_with(&self, status: Option<u16>) {
        self.lock().fail_with = status;
    }

    /// Whether every write (anything but GET) answers 403 Forbidden.
    pub fn read_only(&self, read_only: bool) {
        self.lock().read_only = read_only;
    }

    /// The next `count` requests answer `status` (before any `fail_with` failure applies).
    pub fn fail_next(&self, status: u16, count: usize) {
        let mut world = self.lock();
        world.fail_next.extend(std::iter::repeat_n(status, count));
    }

    /// Every request whose path contains `fragment` (`"endpointslices"`, say) answers
    /// `status`, while the others are served: a cluster API that fails part-way through a read
    /// of several kinds. None: all are served.
    pub fn fail_path(&self, failure: Option<(&str, u16)>) {
        self.lock().fail_path = failure.map(|(fragment, status)| (fragment.to_string(), status));
    }

    /// Whether PATCH and PUT of `pods/{name}/status` answer 403 Forbidden (with the apiserver's
    /// RBAC message naming [`FORBIDDEN_USER`]), as for a role without `patch` on `pods/status`.
    /// Everything else, pod lists and watches and other kinds' status included, is served.
    pub fn forbid_pod_status_patch(&self, forbid: bool) {
        self.lock().forbid_pod_status_patch = forbid;
    }

    /// How many pod status writes [`KubeApi::forbid_pod_status_patch`] has refused so far.
    pub fn forbidden_pod_status_writes(&self) -> usize {
        self.lock().forbidden_pod_status_writes
    }

    /// Delays every response by `d` (None: no delay).
    pub fn delay(&self, d: Option<Duration>) {
        self.lock().delay = d;
    }

    /// Every request so far, in order, as `"GET /api/v1/nodes?limit=500"`. Query parameters
    /// are shown percent-decoded, in the order sent (`labelSelector=app=nginx`).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// How many requests so far start with `prefix` (e.g. `"GET /api/v1/nodes"`).
    pub fn request_count(&self, prefix: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The `Authorization` header of the last request (None if it had none).
    pub fn last_authorization(&self) -> Option<String> {
        self.lock().last_authorization.clone()
    }

    /// The store-wide resourceVersion (bumped by every change).
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Forgets the whole change history, as etcd compaction does: a watch that resumes from
    /// any version seen so far gets 410 Gone and must list again.
    pub fn compact(&self) {
        let mut world = self.lock();
        world.resource_version += 1;
        world.compacted_through = world.resource_version;
        world.changes.clear();
    }

    /// Ends every open watch stream, as a dropped connection or an API server restart would.
    /// Clients resume from the last version they saw.
    pub fn drop_watches(&self) {
        self.lock().watch_generation += 1;
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.lock().open_watches
    }

    /// How often an idle watch that allows bookmarks gets one (1 s unless set).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.lock().bookmark_interval = interval;
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        lock_world(&self.world)
    }
}

/// A TCP listener whose connections fail as soon as the server is stopped. Aborting the
/// `axum::serve` task alone only starts a graceful shutdown of kept-alive connections, which
/// races with the client's next request and lets in-flight (delayed) requests complete.
struct StoppableListener {
    inner: tokio::net::TcpListener,
    stopped: Arc<AtomicBool>,
}

impl axum::serve::Listener for StoppableListener {
    type Io = StoppableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let stream = StoppableStream {
            inner: stream,
            stopped: Arc::clone(&self.stopped),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

struct StoppableStream {
    inner: tokio::net::TcpStream,
    stopped: Arc<AtomicBool>,
}

impl StoppableStream {
    fn check(&self) -> io::Result<()> {
        if self.stopped.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fake kube-apiserver stopped",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for StoppableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(err) = this.check() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StoppableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(err) = this.check() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn lock_world(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(PoisonError::into_inner)
}

fn node_ready_condition(ready: bool) -> Value {
    if ready {
        json!({ "type": "Ready", "status": "True", "reason": "KubeletReady" })
    } else {
        json!({ "type": "Ready", "status": "False", "reason": "KubeletNotReady" })
    }
}

// ---------------------------------------------------------------------------------------------
// Resource types and keys
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ResourceType {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
}

impl ResourceType {
    fn new(api_version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        let (group, version) = split_api_version(api_version);
        ResourceType {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

fn builtin_types() -> Vec<ResourceType> {
    [
        ("v1", "Node", "nodes", false),
        ("v1", "Namespace", "namespaces", false),
        ("v1", "Service", "services", true),
        ("v1", "Pod", "pods", true),
        ("v1", "Endpoints", "endpoints", true),
        ("v1", "ConfigMap", "configmaps", true),
        ("v1", "Secret", "secrets", true),
        ("v1", "Event", "events", true),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "endpointslices",
            true,
        ),
        ("apps/v1", "Deployment", "deployments", true),
        ("coordination.k8s.io/v1", "Lease", "leases", true),
        (
            "elbv2.k8s.aws/v1beta1",
            "TargetGroupBinding",
            "targetgroupbindings",
            true,
        ),
    ]
    .into_iter()
    .map(|(api_version, kind, plural, namespaced)| {
        ResourceType::new(api_version, kind, plural, namespaced)
    })
    .collect()
}

/// Identity of a stored object; `namespace` is empty for cluster-scoped kinds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
}

impl Key {
    fn new(api_version: &str, kind: &str, namespace: &str, name: &str) -> Self {
        Key {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn pod(namespace: &str, name: &str) -> Self {
        Key::new("v1", "Pod", namespace, name)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors as Kubernetes Status objects
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason_for(code),
            message: message.into(),
        }
    }

    fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::new(404, format!("{what} not found"))
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, message)
    }

    fn body(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// HTTP layer
// ---------------------------------------------------------------------------------------------

async fn handle_request(
    State(world): State<Arc<Mutex<World>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: Vec<(String, String)> = match Query::try_from_uri(&uri) {
        Ok(Query(pairs)) => pairs,
        Err(err) => {
            let err = ApiError::bad_request(format!("invalid query string: {err}"));
            return json_response(err.code, &err.body());
        }
    };
    let (delay, failure, forbidden) = {
        let mut world = lock_world(&world);
        world
            .requests
            .push(describe_request(&method, uri.path(), &query));
        world.last_authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let forbidden = (world.read_only && method != Method::GET).then_some(403);
        let on_path = world
            .fail_path
            .as_ref()
            .filter(|(fragment, _)| uri.path().contains(fragment.as_str()))
            .map(|(_, status)| *status);
        let failure = world
            .fail_next
            .pop_front()
            .or(world.fail_with)
            .or(on_path)
            .or(forbidden);
        let status_forbidden = if failure.is_none() && world.forbid_pod_status_patch {
            pod_status_write_forbidden(&method, uri.path())
        } else {
            None
        };
        if status_forbidden.is_some() {
            world.forbidden_pod_status_writes += 1;
        }
        (world.delay, failure, status_forbidden)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = failure {
        let err = ApiError::new(code, format!("injected failure {code}"));
        return json_response(err.code, &err.body());
    }
    if let Some(body) = forbidden {
        return json_response(403, &body);
    }
    if method == Method::GET
        && query
            .iter()
            .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    {
        return match Watch::open(&world, uri.path(), &query) {
            Ok(watch) => watch.response(),
            Err(err) => json_response(err.code, &err.body()),
        };
    }
    let request = ApiRequest {
        method: &method,
        path: uri.path(),
        query: &query,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        body: &body,
    };
    let result = lock_world(&world).serve(&request);
    match result {
        Ok((code, value)) => json_response(code, &value),
        Err(err) => json_response(err.code, &err.body()),
    }
}

// ---------------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------------

/// One open watch: the objects it selects, and where in the store's history it stands.
struct Watch {
    world: Arc<Mutex<World>>,
    api_version: String,
    kind: String,
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
    /// Changes up to here were sent (or are not wanted).
    sent_through: u64,
    /// Whether the watch started at "any version": the current objects come first, as ADDED.
    replay_current: bool,
    bookmarks: bool,
    generation: u64,
    ends_at: tokio::time::Instant,
    next_bookmark: tokio::time::Instant,
    done: bool,
}

/// How often an open watch looks for new changes.
const WATCH_POLL: Duration = Duration::from_millis(10);

impl Watch {
    fn open(
        world: &Arc<Mutex<World>>,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Watch, ApiError> {
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let mut w = lock_world(world);
        let route = w.route(path)?;
        if route.name.is_some() {
            return Err(ApiError::bad_request("watch a collection, not one object"));
        }
        let labels = param("labelSelector")
            .map(parse_label_selector)
            .transpose()?
            .unwrap_or_default();
        let fields = param("fieldSelector")
            .map(parse_field_selector)
            .transpose()?
            .unwrap_or_default();
        let since =
            match param("resourceVersion") {
                None | Some("") | Some("0") => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        let timeout = match param("timeoutSeconds") {
            None | Some("") => Duration::from_secs(1800),
            Some(t) => Duration::from_secs(
                t.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
            ),
        };
        w.open_watches += 1;
        let now = tokio::time::Instant::now();
        Ok(Watch {
            world: Arc::clone(world),
            api_version: route.rt.api_version(),
            kind: route.rt.kind.clone(),
            namespace: route.namespace,
            labels,
            fields,
            sent_through: since.unwrap_or(w.resource_version),
            replay_current: since.is_none(),
            bookmarks: param("allowWatchBookmarks").is_some_and(|b| b == "true"),
            generation: w.watch_generation,
            ends_at: now + timeout,
            next_bookmark: now + w.bookmark_interval,
            done: false,
        })
    }

    fn selects(&self, key: &Key, object: &Value) -> bool {
        key.api_version == self.api_version
            && key.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| &key.namespace == ns)
            && self
                .labels
                .iter()
                .all(|r| r.matches(&object["metadata"]["labels"]))
            && self.fields.iter().all(|f| f.matches(object))
    }

    /// The next lines to send, or `None` when the watch ends (its time is up, the server
    /// failed or cut its watches, or it sent 410 Gone).
    async fn next_chunk(&mut self) -> Option<String> {
        loop {
            if self.done {
                return None;
            }
            let now = tokio::time::Instant::now();
            {
                let w = lock_world(&self.world);
                // A failing server, or cut connections, end the stream: the client reconnects.
                if w.watch_generation != self.generation || w.fail_with.is_some() {
                    return None;
                }
                if !self.replay_current && self.sent_through < w.compacted_through {
                    self.done = true;
                    let gone = ApiError::new(
                        410,
                        format!(
                            "too old resource version: {} ({})",
                            self.sent_through,
                            w.compacted_through + 1
                        ),
                    );
                    return Some(watch_line("ERROR", &gone.body()));
                }
                let mut lines = String::new();
                if std::mem::take(&mut self.replay_current) {
                    for (key, object) in &w.objects {
                        if self.selects(key, object) {
                            lines.push_str(&watch_line("ADDED", object));
                        }
                    }
                }
                let unsent = w
                    .changes
                    .partition_point(|c| c.resource_version <= self.sent_through);
                for change in w.changes.range(unsent..) {
                    if self.selects(&change.key, &change.object) {
                        lines.push_str(&watch_line(change.event, &change.object));
                    }
                }
                self.sent_through = w.resource_version;
                if lines.is_empty() && self.bookmarks && now >= self.next_bookmark {
                    let bookmark = json!({
                        "kind": self.kind,
                        "apiVersion": self.api_version,
                        "metadata": {"resourceVersion": w.resource_version.to_string()},
                    });
                    lines = watch_line("BOOKMARK", &bookmark);
                }
                if !lines.is_empty() {
                    self.next_bookmark = now + w.bookmark_interval;
                    return Some(lines);
                }
            }
            if now >= self.ends_at {
                return None;
            }
            tokio::time::sleep(WATCH_POLL).await;
        }
    }

    fn response(self) -> Response {
        let stream = futures::stream::unfold(self, |mut watch| async move {
            let chunk = watch.next_chunk().await?;
            Some((Ok::<Bytes, io::Error>(Bytes::from(chunk)), watch))
        });
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from_stream(stream),
        )
            .into_response()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut w = lock_world(&self.world);
        w.open_watches = w.open_watches.saturating_sub(1);
    }
}

fn watch_line(event: &str, object: &Value) -> String {
    let mut line = json!({"type": event, "object": object}).to_string();
    line.push('\n');
    line
}

/// The user named in the 403 of [`KubeApi::forbid_pod_status_patch`].
pub const FORBIDDEN_USER: &str = "system:serviceaccount:kube-system:tgb-reconciler";

/// For a PATCH or PUT of `/api/v1/namespaces/{ns}/pods/{name}/status`, the Status body of the
/// apiserver's RBAC denial; None for any other request.
fn pod_status_write_forbidden(method: &Method, path: &str) -> Option<Value> {
    let verb = match *method {
        Method::PATCH => "patch",
        Method::PUT => "update",
        _ => return None,
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", namespace, "pods", name, "status"] = segments.as_slice() else {
        return None;
    };
    Some(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "pods {name:?} is forbidden: User {FORBIDDEN_USER:?} cannot {verb} resource \"pods/status\" in API group \"\" in the namespace {namespace:?}"
        ),
        "reason": "Forbidden",
        "details": { "name": name, "kind": "pods" },
        "code": 403,
    }))
}

fn describe_request(method: &Method, path: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        format!("{method} {path}")
    } else {
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{method} {path}?{}", query.join("&"))
    }
}

struct ApiRequest<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a [(String, String)],
    content_type: &'a str,
    body: &'a [u8],
}

impl ApiRequest<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(self.body)
            .map_err(|err| ApiError::bad_request(format!("request body is not valid JSON: {err}")))
    }
}

struct Route {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The world: store + controllers
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct PodOverride {
    ready: Option<bool>,
    deletion_timestamp: Option<String>,
}

struct World {
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Value>,
    /// Objects owned by the simulated controllers (Deployment pods, EndpointSlices).
    generated: BTreeSet<Key>,
    resource_version: u64,
    uid_counter: u64,
    pod_ip_pool: Ipv4Pool,
    /// IPs handed out from the pool, by (namespace, pod name).
    pod_ips: BTreeMap<(String, String), Ipv4Addr>,
    pod_overrides: BTreeMap<(String, String), PodOverride>,
    fail_with: Option<u16>,
    fail_next: VecDeque<u16>,
    fail_path: Option<(String, u16)>,
    /// PATCH/PUT of `pods/{name}/status` answers 403, as for RBAC without `pods/status`.
    forbid_pod_status_patch: bool,
    /// How many pod status writes were answered 403 by `forbid_pod_status_patch`.
    forbidden_pod_status_writes: usize,
    /// Every write answers 403, as for an identity that may only read.
    read_only: bool,
    delay: Option<Duration>,
    requests: Vec<String>,
    last_authorization: Option<String>,
    /// Every change still remembered, oldest first, for watches to replay.
    changes: VecDeque<Change>,
    /// Changes up to this resourceVersion are forgotten: a watch from before it gets 410 Gone.
    compacted_through: u64,
    /// Bumped by [`KubeApi::drop_watches`]: open watch streams end, as when connections are cut.
    watch_generation: u64,
    /// Watch streams open now.
    open_watches: usize,
    /// How often a watch that asked for bookmarks gets one while nothing changes.
    bookmark_interval: Duration,
}

/// One change of the store, as a watch tells it.
#[derive(Clone, Debug)]
struct Change {
    resource_version: u64,
    event: &'static str,
    key: Key,
    object: Value,
}

/// How many changes the store remembers for watches, like etcd's compaction window.
const REMEMBERED_CHANGES: usize = 100_000;

impl World {
    fn new() -> Self {
        World {
            types: builtin_types(),
            objects: BTreeMap::new(),
            generated: BTreeSet::new(),
            resource_version: 1,
            uid_counter: 0,
            pod_ip_pool: Ipv4Pool::parse(DEFAULT_POD_IP_POOL)
                .expect("the default pod IP pool is a valid CIDR"),
            pod_ips: BTreeMap::new(),
            pod_overrides: BTreeMap::new(),
            fail_with: None,
            fail_next: VecDeque::new(),
            fail_path: None,
            forbid_pod_status_patch: false,
            forbidden_pod_status_writes: 0,
            read_only: false,
            delay: None,
            requests: Vec::new(),
            last_authorization: None,
            changes: VecDeque::new(),
            compacted_through: 0,
            watch_generation: 0,
            open_watches: 0,
            bookmark_interval: Duration::from_secs(1),
        }
    }

    /// Remembers a change for watches, forgetting the oldest past the window.
    fn record_change(&mut self, event: &'static str, key: Key, object: Value) {
        self.changes.push_back(Change {
            resource_version: self.resource_version,
            event,
            key,
            object,
        });
        while self.changes.len() > REMEMBERED_CHANGES {
            if let Some(forgotten) = self.changes.pop_front() {
                self.compacted_through = forgotten.resource_version;
            }
        }
    }

    // ----- types -----

    fn register(&mut self, rt: ResourceType) {
        self.types
            .retain(|t| !(t.api_version() == rt.api_version() && t.kind == rt.kind));
        self.types.push(rt);
    }

    fn type_by_kind(&self, kind: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.kind == kind)
            .or_else(|| {
                self.types
                    .iter()
                    .find(|t| t.kind.eq_ignore_ascii_case(kind))
            })
            .cloned()
    }

    fn type_of(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
    }

    fn type_by_plural(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    // ----- store -----

    /// Works out the identity of an object and normalises its namespace. Unknown kinds are
    /// registered with a guessed plural when `learn` is set.
    fn key_of(&mut self, object: &mut Value, learn: bool) -> Result<(Key, ResourceType), ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(format!(
                "an object must be a mapping, got {object}"
            )));
        }
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        if api_version.is_empty() || kind.is_empty() {
            return Err(ApiError::bad_request(
                "object has no apiVersion or kind".to_owned(),
            ));
        }
        let rt = match self.type_of(&api_version, &kind) {
            Some(rt) => rt,
            None if learn => {
                let rt = ResourceType::new(&api_version, &kind, &guess_plural(&kind), true);
                self.register(rt.clone());
                rt
            }
            None => {
                return Err(ApiError::not_found(format!(
                    "resource type {api_version} {kind}"
                )));
            }
        };
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if name.is_empty() {
            return Err(ApiError::new(422, format!("{kind} has no metadata.name")));
        }
        let namespace = if rt.namespaced {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .filter(|ns| !ns.is_empty())
                .unwrap_or("default")
                .to_owned();
            object["metadata"]["namespace"] = Value::String(ns.clone());
            ns
        } else {
            if let Some(meta) = object["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            String::new()
        };
        Ok((Key::new(&api_version, &kind, &namespace, &name), rt))
    }

    /// Creates or replaces an object, keeping uid/creationTimestamp, bumping generation when
    /// the spec changes and resourceVersion when anything changes. Returns the stored object.
    fn store(&mut self, mut object: Value) -> Value {
        let key = match self.key_of(&mut object, true) {
            Ok((key, _)) => key,
            Err(err) => panic!("fake kube-apiserver: cannot store object: {}", err.message),
        };
        self.store_at(key, object)
    }

    fn store_at(&mut self, key: Key, mut object: Value) -> Value {
        let old = self.objects.get(&key);
        let (uid, created, generation) = match old {
            Some(old) => {
                let old_generation = old["metadata"]["generation"].as_u64().unwrap_or(1);
                let bump = u64::from(old.get("spec") != object.get("spec"));
                (
                    old["metadata"]["uid"].clone(),
                    old["metadata"]["creationTimestamp"].clone(),
                    old_generation + bump,
                )
            }
            None => {
                let uid = match &object["metadata"]["uid"] {
                    Value::String(uid) if !uid.is_empty() => Value::String(uid.clone()),
                    _ => Value::String(self.next_uid()),
                };
                let created = match &object["metadata"]["creationTimestamp"] {
                    Value::String(ts) if !ts.is_empty() => Value::String(ts.clone()),
                    _ => Value::String(now_timestamp()),
                };
                (uid, created, 1)
            }
        };
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.insert("uid".to_owned(), uid);
            meta.insert("creationTimestamp".to_owned(), created);
            meta.insert("generation".to_owned(), json!(generation));
            meta.remove("resourceVersion");
        }
        if let Some(old) = self.objects.get(&key) {
            let mut old_without_rv = old.clone();
            if let Some(meta) = old_without_rv["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
            }
            if old_without_rv == object {
                return old.clone();
            }
        }
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.resource_version.to_string());
        let event = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key.clone(), object.clone());
        self.record_change(event, key, object.clone());
        object
    }

    /// Removes an object and what hangs off it (pod IP, pod overrides, generated mark).
    fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut removed = self.objects.remove(key)?;
        self.resource_version += 1;
        removed["metadata"]["resourceVersion"] = Value::String(self.resource_version.to_string());
        self.record_change("DELETED", key.clone(), removed.clone());
        self.generated.remove(key);
        if key.api_version == "v1" && key.kind == "Pod" {
            let pod = (key.namespace.clone(), key.name.clone());
            self.pod_ips.remove(&pod);
            self.pod_overrides.remove(&pod);
        }
        Some(removed)
    }

    fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        format!("6b1c0000-0000-4000-8000-{:012x}", self.uid_counter)
    }

    fn apply_document(&mut self, mut doc: Value) {
        if doc.is_null() {
            return;
        }
        if doc["kind"] == "List" {
            if let Value::Array(items) = doc["items"].take() {
                for item in items {
                    self.apply_document(item);
                }
            }
            return;
        }
        match self.key_of(&mut doc, true) {
            Ok((key, _)) => {
                // A test that applies an object takes it over from the simulated controllers
                // (until they regenerate an object of the same name).
                self.generated.remove(&key);
                self.store_at(key, doc);
            }
            Err(err) => panic!(
                "fake kube-apiserver: cannot apply manifest: {}\n--- object ---\n{doc:#}",
                err.message
            ),
        }
    }

    fn expect_pod(&self, namespace: &str, pod: &str) {
        if !self.objects.contains_key(&Key::pod(namespace, pod)) {
            let known: Vec<String> = self
                .objects
                .keys()
                .filter(|k| k.kind == "Pod")
                .map(|k| format!("{}/{}", k.namespace, k.name))
                .collect();
            panic!("fake kube-apiserver: no pod {namespace}/{pod}; pods are {known:?}");
        }
    }

    fn objects_of<'a>(
        &'a self,
        api_version: &'a str,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        self.objects
            .iter()
            .filter(move |(k, _)| k.api_version == api_version && k.kind == kind)
    }

    // ----- controllers -----

    fn reconcile(&mut self) {
        self.allocate_node_ports();
        self.sync_deployment_pods();
        self.apply_pod_overrides();
        self.apply_pod_readiness_gates();
        self.sync_endpoint_slices();
    }

    /// NodePort/LoadBalancer Services keep their nodePorts; missing ones are allocated
    /// from 30000 upward.
    fn allocate_node_ports(&mut self) {
        let mut used: BTreeSet<u64> = BTreeSet::new();
        let mut needing: Vec<Key> = Vec::new();
        for (key, svc) in self.objects_of("v1", "Service") {
            let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP");
            let wants_node_ports = ty == "NodePort"
                || (ty == "LoadBalancer"
                    && svc["spec"]["allocateLoadBalancerNodePorts"] != Value::Bool(false));
            for port in svc["spec"]["ports"].as_array().into_iter().flatten() {
                match port["nodePort"].as_u64() {
                    Some(node_port) => {
                        used.insert(node_port);
                    }
                    None if wants_node_ports => needing.push(key.clone()),
                    None => {}
                }
            }
        }
        needing.dedup();
        for key in needing {
            let Some(mut svc) = self.objects.get(&key).cloned() else {
                continue;
            };
            if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
                for port in ports
                    .iter_mut()
                    .filter(|p| p["nodePort"].as_u64().is_none())
                {
                    let free = (FIRST_NODE_PORT..=LAST_NODE_PORT)
                        .find(|p| !used.contains(p))
                        .expect("fake kube-apiserver: node ports exhausted");
                    used.insert(free);
                    port["nodePort"] = json!(free);
                }
            }
            self.store_at(key, svc);
        }
    }

    /// Each Deployment owns pods `<deploy>-<i>`, spread round-robin over the nodes.
    fn sync_deployment_pods(&mut self) {
        let nodes: Vec<(String, Option<String>)> = self
            .objects_of("v1", "Node")
            .map(|(key, node)| (key.name.clone(), node_internal_ip(node)))
            .collect();
        let deployments: Vec<(Key, Value)> = self
            .objects_of("apps/v1", "Deployment")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        let mut desired: BTreeMap<Key, Value> = BTreeMap::new();
        let mut deployment_status: Vec<(Key, Value)> = Vec::new();
        for (deploy_key, deploy) in &deployments {
            let replicas = deploy["spec"]["replicas"].as_u64().unwrap_or(1);
            let template = &deploy["spec"]["template"];
            let host_network = template["spec"]["hostNetwork"] == Value::Bool(true);
            let mut ready_count = 0u64;
            for index in 0..replicas {
                let ns = deploy_key.namespace.as_str();
                let pod_name = format!("{}-{index}", deploy_key.name);
                let pod_key = Key::pod(ns, &pod_name);
                let pod_id = (ns.to_owned(), pod_name.clone());

                // Keep a pod on its node while that node exists; otherwise round-robin.
                let current_node = self
                    .objects
                    .get(&pod_key)
                    .filter(|_| self.generated.contains(&pod_key))
                    .and_then(|pod| pod["spec"]["nodeName"].as_str())
                    .filter(|node| nodes.iter().any(|(name, _)| name == node))
                    .map(str::to_owned);
                let node_name = current_node.or_else(|| {
                    let slot = usize::try_from(index).unwrap_or(usize::MAX) % nodes.len().max(1);
                    nodes.get(slot).map(|(name, _)| name.clone())
                });
                let host_ip = node_name.as_ref().and_then(|node| {
                    nodes
                        .iter()
                        .find(|(name, _)| name == node)
                        .and_then(|(_, ip)| ip.clone())
                });
                let pod_ip = if host_network {
                    self.pod_ips.remove(&pod_id);
                    host_ip.clone()
                } else {
                    Some(self.pod_ip_for(&pod_id).to_string())
                };

                let overrides = self.pod_overrides.get(&pod_id);
                // Whether the containers are ready; Ready also waits for readiness gates.
                let ready = overrides.and_then(|o| o.ready).unwrap_or(true) && pod_ip.is_some();
                let terminating = overrides.and_then(|o| o.deletion_timestamp.clone());
                // Conditions written by others (readiness gate conditions, say) are kept.
                let foreign_conditions: Vec<Value> = self
                    .objects
                    .get(&pod_key)
                    .filter(|_| self.generated.contains(&pod_key))
                    .and_then(|pod| pod["status"]["conditions"].as_array())
                    .into_iter()
                    .flatten()
                    .filter(|c| !is_kubelet_condition(c))
                    .cloned()
                    .collect();

                let mut metadata = json!({
                    "name": pod_name,
                    "namespace": ns,
                    "labels": template["metadata"]["labels"].clone(),
                    "ownerReferences": [{
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": deploy_key.name,
                        "uid": deploy["metadata"]["uid"].clone(),
                        "controller": true,
                        "blockOwnerDeletion": true,
                    }],
                });
                if template["metadata"]["annotations"].is_object() {
                    metadata["annotations"] = template["metadata"]["annotations"].clone();
                }
                if let Some(ts) = terminating {
                    metadata["deletionTimestamp"] = Value::String(ts);
                    metadata["deletionGracePeriodSeconds"] = json!(30);
                }
                let mut spec = template["spec"].clone();
                if !spec.is_object() {
                    spec = json!({});
                }
                spec["nodeName"] = Value::String(node_name.clone().unwrap_or_default());
                let mut conditions = pod_conditions(ready, node_name.is_some());
                if let Value::Array(list) = &mut conditions {
                    list.extend(foreign_conditions);
                }
                let mut status = json!({
                    "phase": if pod_ip.is_some() { "Running" } else { "Pending" },
                    "conditions": conditions,
                });
                if let Some(ip) = &pod_ip {
                    status["podIP"] = json!(ip);
                    status["podIPs"] = json!([{ "ip": ip }]);
                }
                if let Some(ip) = &host_ip {
                    status["hostIP"] = json!(ip);
                    status["hostIPs"] = json!([{ "ip": ip }]);
                }
                let mut pod = json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": metadata,
                    "spec": spec,
                    "status": status,
                });
                apply_readiness_gates(&mut pod);
                if pod_is_ready(&pod) && pod["metadata"]["deletionTimestamp"].is_null() {
                    ready_count += 1;
                }
                desired.insert(pod_key, pod);
            }
            let mut deploy = deploy.clone();
            deploy["status"] = json!({
                "observedGeneration": deploy["metadata"]["generation"].clone(),
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready_count,
                "availableReplicas": ready_count,
            });
            deployment_status.push((deploy_key.clone(), deploy));
        }

        self.replace_generated("v1", "Pod", desired);
        for (key, deploy) in deployment_status {
            self.store_at(key, deploy);
        }
    }

    /// The pool IP of a pod, allocating the lowest free one.
    fn pod_ip_for(&mut self, pod: &(String, String)) -> Ipv4Addr {
        if let Some(ip) = self.pod_ips.get(pod) {
            return *ip;
        }
        let mut used: BTreeSet<Ipv4Addr> = self.pod_ips.values().copied().collect();
        for (key, object) in self.objects_of("v1", "Pod") {
            if !self.generated.contains(key)
                && let Some(ip) = object["status"]["podIP"].as_str()
                && let Ok(ip) = ip.parse()
            {
                used.insert(ip);
            }
        }
        let ip = self
            .pod_ip_pool
            .hosts()
            .find(|ip| !used.contains(ip))
            .unwrap_or_else(|| {
                panic!(
                    "fake kube-apiserver: pod IP pool {} is exhausted",
                    self.pod_ip_pool
                )
            });
        self.pod_ips.insert(pod.clone(), ip);
        ip
    }

    /// Readiness/termination overrides on pods that tests applied directly.
    fn apply_pod_overrides(&mut self) {
        let mut updates = Vec::new();
        for ((ns, name), overrides) in &self.pod_overrides {
            let key = Key::pod(ns, name);
            if self.generated.contains(&key) {
                continue;
            }
            let Some(mut pod) = self.objects.get(&key).cloned() else {
                continue;
            };
            if let Some(ready) = overrides.ready {
                let mut conditions: Vec<Value> = pod["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if readiness_gates(&pod).is_empty() {
                    conditions.retain(|c| c["type"] != "Ready");
                    conditions.push(json!({ "type": "Ready", "status": bool_status(ready) }));
                } else {
                    // With gates the override is about the containers; Ready follows the gates.
                    set_condition(
                        &mut conditions,
                        json!({ "type": "ContainersReady", "status": bool_status(ready) }),
                    );
                }
                pod["status"]["conditions"] = Value::Array(conditions);
            }
            if let Some(ts) = &overrides.deletion_timestamp {
                pod["metadata"]["deletionTimestamp"] = Value::String(ts.clone());
            }
            // Settle Ready now, so one override is one change rather than two.
            apply_readiness_gates(&mut pod);
            updates.push((key, pod));
        }
        for (key, pod) in updates {
            self.store_at(key, pod);
        }
    }

    /// The kubelet's readiness with gates: every pod with `spec.readinessGates` is Ready only
    /// while its containers are ready and each gate's condition is True. Only pods whose Ready
    /// changes are stored, so pods that stay as they are cause no watch events.
    fn apply_pod_readiness_gates(&mut self) {
        let mut updates = Vec::new();
        for (key, pod) in self.objects_of("v1", "Pod") {
            if readiness_gates(pod).is_empty() {
                continue;
            }
            let mut pod = pod.clone();
            if apply_readiness_gates(&mut pod) {
                updates.push((key.clone(), pod));
            }
        }
        for (key, pod) in updates {
            self.store_at(key, pod);
        }
    }

    /// EndpointSlices for every Service with a selector, as the endpointslice controller does.
    fn sync_endpoint_slices(&mut self) {
        let zones: BTreeMap<String, String> = self
            .objects_of("v1", "Node")
            .filter_map(|(key, node)| {
                node["metadata"]["labels"][ZONE_LABEL]
                    .as_str()
                    .map(|zone| (key.name.clone(), zone.to_owned()))
            })
            .collect();
        let mut desired: BTreeMap<Key, Value> = BTreeMap::new();
        for (svc_key, svc) in self.objects_of("v1", "Service") {
            let Some(selector) = svc["spec"]["selector"]
                .as_object()
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            if svc["spec"]["type"] == "ExternalName" {
                continue;
            }
            let ns = svc_key.namespace.as_str();
            let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == Value::Bool(true);
            let svc_ports: Vec<Value> =
                svc["spec"]["ports"].as_array().cloned().unwrap_or_default();

            // Group endpoints by their resolved port list, like real clusters do.
            let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
            for (pod_key, pod) in self.objects_of("v1", "Pod") {
                if pod_key.namespace != ns || !labels_match(&pod["metadata"]["labels"], selector) {
                    continue;
                }
                let Some(endpoint) = pod_endpoint(pod, publish_not_ready, &zones) else {
                    continue;
                };
                let ports = resolve_ports(&svc_ports, pod);
                let id = Value::Array(ports.clone()).to_string();
                groups
                    .entry(id)
                    .or_insert_with(|| (ports, Vec::new()))
                    .1
                    .push(endpoint);
            }
            let slices: Vec<(String, Option<Vec<Value>>, Vec<Value>)> = if groups.is_empty() {
                vec![(String::new(), None, Vec::new())]
            } else {
                groups
                    .into_iter()
                    .map(|(id, (ports, endpoints))| (id, Some(ports), endpoints))
                    .collect()
            };
            for (id, ports, endpoints) in slices {
                let name = format!("{}-{}", svc_key.name, short_hash(&id));
                let mut labels = svc["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                labels.insert(SERVICE_NAME_LABEL.to_owned(), json!(svc_key.name));
                labels.insert(MANAGED_BY_LABEL.to_owned(), json!(ENDPOINTSLICE_CONTROLLER));
                let mut slice = json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "generateName": format!("{}-", svc_key.name),
                        "labels": labels,
                        "ownerReferences": [{
                            "apiVersion": "v1",
                            "kind": "Service",
                            "name": svc_key.name,
                            "uid": svc["metadata"]["uid"].clone(),
                            "controller": true,
                            "blockOwnerDeletion": true,
                        }],
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                });
                if let Some(ports) = ports {
                    slice["ports"] = Value::Array(ports);
                }
                desired.insert(
                    Key::new("discovery.k8s.io/v1", "EndpointSlice", ns, &name),
                    slice,
                );
            }
        }
        self.replace_generated("discovery.k8s.io/v1", "EndpointSlice", desired);
    }

    /// Makes the generated objects of a kind exactly `desired`.
    fn replace_generated(&mut self, api_version: &str, kind: &str, desired: BTreeMap<Key, Value>) {
        let stale: Vec<Key> = self
            .generated
            .iter()
            .filter(|k| k.api_version == api_version && k.kind == kind && !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in stale {
            self.remove(&key);
        }
        for (key, object) in desired {
            self.generated.insert(key.clone());
            self.store_at(key, object);
        }
    }

    // ----- HTTP semantics -----

    fn serve(&mut self, req: &ApiRequest<'_>) -> Result<(u16, Value), ApiError> {
        if req.path == "/version" && req.method == Method::GET {
            return Ok((200, version_info()));
        }
        let route = self.route(req.path)?;
        let result = match (req.method.as_str(), route.name.as_deref()) {
            ("GET", None) => return self.list_response(&route, req),
            ("GET", Some(name)) => return self.get_response(&route, name),
            ("POST", None) => self.create(&route, req)?,
            ("PUT", Some(name)) => self.replace(&route, name, req)?,
            ("PATCH", Some(name)) => self.patch(&route, name, req)?,
            ("DELETE", Some(name)) => self.delete_response(&route, name)?,
            (method, _) => {
                return Err(ApiError::new(
                    405,
                    format!("{method} is not supported on {}", req.path),
                ));
            }
        };
        self.reconcile();
        Ok(result)
    }

    fn route(&self, path: &str) -> Result<Route, ApiError> {
        let not_found = || {
            ApiError::not_found(format!(
                "the server could not find the requested resource ({path})"
            ))
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", "v1", rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(not_found()),
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some((*name).to_owned()), None),
            [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
            _ => return Err(not_found()),
        };
        let rt = self
            .type_by_plural(group, version, plural)
            .ok_or_else(not_found)?;
        if namespace.is_some() && !rt.namespaced {
            return Err(not_found());
        }
        if let Some(sub) = &subresource
            && sub != "status"
        {
            return Err(not_found());
        }
        Ok(Route {
            rt,
            namespace,
            name,
            subresource,
        })
    }

    fn route_key(&self, route: &Route, name: &str) -> Key {
        let namespace = if route.rt.namespaced {
            route
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned())
        } else {
            String::new()
        };
        Key::new(&route.rt.api_version(), &route.rt.kind, &namespace, name)
    }

    fn list_response(&self, route: &Route, req: &ApiRequest<'_>) -> Result<(u16, Value), ApiError> {
        let labels = req
            .param("labelSelector")
            .map(parse_label_selector)
            .transpose()?
            .unwrap_or_default();
        let fields = req
            .param("fieldSelector")
            .map(parse_field_selector)
            .transpose()?
            .unwrap_or_default();
        let limit = match req.param("limit") {
            None | Some("") => None,
            Some(limit) => Some(
                limit
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
            ),
        }
        .filter(|limit| *limit > 0);
        let after = match req.param("continue") {
            None | Some("") => None,
            Some(token) => Some(decode_continue(token).ok_or_else(|| {
                ApiError::bad_request(format!("invalid continue token {token:?}"))
            })?),
        };

        let api_version = route.rt.api_version();
        let matching: Vec<(&Key, &Value)> = self
            .objects
            .iter()
            .filter(|(key, _)| key.api_version == api_version && key.kind == route.rt.kind)
            .filter(|(key, _)| {
                route
                    .namespace
                    .as_ref()
                    .is_none_or(|ns| &key.namespace == ns)
            })
            .filter(|(key, _)| {
                after
                    .as_ref()
                    .is_none_or(|(ns, name)| (&key.namespace, &key.name) > (ns, name))
            })
            .filter(|(_, object)| {
                labels
                    .iter()
                    .all(|r| r.matches(&object["metadata"]["labels"]))
            })
            .filter(|(_, object)| fields.iter().all(|f| f.matches(object)))
            .collect();

        let page_len = limit.unwrap_or(matching.len()).min(matching.len());
        let items: Vec<Value> = matching[..page_len]
            .iter()
            .map(|(_, v)| (*v).clone())
            .collect();
        let mut metadata = json!({ "resourceVersion": self.resource_version.to_string() });
        if page_len < matching.len()
            && let Some((last, _)) = matching.get(page_len.wrapping_sub(1))
        {
            metadata["continue"] = json!(encode_continue(&last.namespace, &last.name));
            metadata["remainingItemCount"] = json!(matching.len() - page_len);
        }
        Ok((
            200,
            json!({
                "apiVersion": api_version,
                "kind": format!("{}List", route.rt.kind),
                "metadata": metadata,
                "items": items,
            }),
        ))
    }

    fn get_response(&self, route: &Route, name: &str) -> Result<(u16, Value), ApiError> {
        let key = self.route_key(route, name);
        self.objects
            .get(&key)
            .map(|object| (200, object.clone()))
            .ok_or_else(|| object_not_found(&route.rt, name))
    }

    /// Checks/fills apiVersion, kind and namespace of a request body against the route.
    fn body_for_route(&self, route: &Route, mut object: Value) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("request body must be a JSON object"));
        }
        let api_version = route.rt.api_version();
        for (field, expected) in [("apiVersion", &api_version), ("kind", &route.rt.kind)] {
            match object[field].as_str() {
                None | Some("") => object[field] = json!(expected),
                Some(given) if given == expected => {}
                Some(given) => {
                    return Err(ApiError::bad_request(format!(
                        "{field} {given:?} does not match the request path ({expected})"
                    )));
                }
            }
        }
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        if let Some(ns) = &route.namespace {
            match object["metadata"]["namespace"].as_str() {
                None | Some("") => object["metadata"]["namespace"] = json!(ns),
                Some(given) if given == ns => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        Ok(object)
    }

    fn create(&mut self, route: &Route, req: &ApiRequest<'_>) -> Result<(u16, Value), ApiError> {
        if route.subresource.is_some() {
            return Err(ApiError::new(405, "cannot create a subresource"));
        }
        let mut object = self.body_for_route(route, req.json_body()?)?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if name.is_empty()
            && let Some(prefix) = object["metadata"]["generateName"].as_str()
        {
            self.uid_counter += 1;
            object["metadata"]["name"] = json!(format!(
                "{prefix}{}",
                short_hash(&self.uid_counter.to_string())
            ));
        }
        let (key, _) = self.key_of(&mut object, false)?;
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                format!("{} {:?} already exists", route.rt.plural, key.name),
            )
            .with_reason("AlreadyExists"));
        }
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("uid");
            meta.remove("creationTimestamp");
        }
        Ok((201, self.store_at(key, object)))
    }

    fn replace(
        &mut self,
        route: &Route,
        name: &str,
        req: &ApiRequest<'_>,
    ) -> Result<(u16, Value), ApiError> {
        let key = self.route_key(route, name);
        let current = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| object_not_found(&route.rt, name))?;
        let body = self.body_for_route(route, req.json_body()?)?;
        if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        check_resource_version(&body, &current)?;
        let object = if route.subresource.is_some() {
            let mut object = current.clone();
            object["status"] = body["status"].clone();
            object
        } else {
            let mut object = body;
            object["metadata"]["name"] = json!(name);
            // Like a real apiserver, the main resource ignores status changes.
            match current.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(map) = object.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            object
        };
        Ok((200, self.store_at(key, object)))
    }

    fn patch(
        &mut self,
        route: &Route,
        name: &str,
        req: &ApiRequest<'_>,
    ) -> Result<(u16, Value), ApiError> {
        let content_type = req.content_type.split(';').next().unwrap_or("").trim();
        let is_apply = content_type == "application/apply-patch+yaml";
        // Strategic merge patches merge lists by their patch merge key; only `conditions` (by
        // `type`) of built-in kinds is modelled. Custom resources take them as merge patches.
        let strategic = content_type == "application/strategic-merge-patch+json"
            && is_builtin_group(&route.rt.group);
        if !matches!(
            content_type,
            "application/merge-patch+json"
                | "application/strategic-merge-patch+json"
                | "application/apply-patch+yaml"
        ) {
            return Err(ApiError::new(
                415,
                format!("the fake kube-apiserver does not support patch type {content_type:?}"),
            ));
        }
        let patch = req.json_body()?;
        let key = self.route_key(route, name);
        let current = match self.objects.get(&key) {
            Some(current) => current.clone(),
            None if is_apply && route.subresource.is_none() => {
                let mut object = self.body_for_route(route, patch)?;
                object["metadata"]["name"] = json!(name);
                let (key, _) = self.key_of(&mut object, false)?;
                return Ok((201, self.store_at(key, object)));
            }
            None => return Err(object_not_found(&route.rt, name)),
        };
        check_resource_version(&patch, &current)?;
        let mut object = current.clone();
        if route.subresource.is_some() {
            if let Some(status) = patch.get("status") {
                if strategic {
                    strategic_merge_status(&mut object["status"], status);
                } else {
                    merge_patch(&mut object["status"], status);
                }
            }
        } else {
            merge_patch(&mut object, &patch);
            object["status"] = current["status"].clone();
            if current.get("status").is_none()
                && let Some(map) = object.as_object_mut()
            {
                map.remove("status");
            }
        }
        let object = self.body_for_route(route, object)?;
        Ok((200, self.store_at(key, object)))
    }

    fn delete_response(&mut self, route: &Route, name: &str) -> Result<(u16, Value), ApiError> {
        if route.subresource.is_some() {
            return Err(ApiError::new(405, "cannot delete a subresource"));
        }
        let key = self.route_key(route, name);
        let removed = self
            .remove(&key)
            .ok_or_else(|| object_not_found(&route.rt, name))?;
        Ok((
            200,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": route.rt.group,
                    "kind": route.rt.plural,
                    "uid": removed["metadata"]["uid"].clone(),
                },
            }),
        ))
    }
}

impl ApiError {
    fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }
}

fn object_not_found(rt: &ResourceType, name: &str) -> ApiError {
    let resource = if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    };
    ApiError::not_found(format!("{resource} {name:?}"))
}

fn check_resource_version(body: &Value, current: &Value) -> Result<(), ApiError> {
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv)
            if !rv.is_empty() && Some(rv) != current["metadata"]["resourceVersion"].as_str() =>
        {
            Err(ApiError::new(
                409,
                "the object has been modified; please apply your changes to the latest version and try again",
            ))
        }
        _ => Ok(()),
    }
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

// ---------------------------------------------------------------------------------------------
// Pods and endpoints
// ---------------------------------------------------------------------------------------------

fn bool_status(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

fn pod_conditions(ready: bool, scheduled: bool) -> Value {
    json!([
        { "type": "PodScheduled", "status": bool_status(scheduled) },
        { "type": "Initialized", "status": "True" },
        { "type": "ContainersReady", "status": bool_status(ready) },
        { "type": "Ready", "status": bool_status(ready) },
    ])
}

/// Conditions the simulated kubelet owns; every other condition type is kept as written.
const KUBELET_CONDITIONS: [&str; 4] = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];

fn is_kubelet_condition(condition: &Value) -> bool {
    condition["type"]
        .as_str()
        .is_some_and(|t| KUBELET_CONDITIONS.contains(&t))
}

/// The condition types named by `spec.readinessGates`, in order.
fn readiness_gates(pod: &Value) -> Vec<String> {
    pod["spec"]["readinessGates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|gate| gate["conditionType"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Replaces the condition of the same type in place, or appends it.
fn set_condition(conditions: &mut Vec<Value>, condition: Value) {
    match conditions
        .iter_mut()
        .find(|c| c["type"] == condition["type"])
    {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// Sets the Ready condition of a pod with readiness gates the way the kubelet computes it:
/// True when ContainersReady is True and every gate's condition is True; otherwise False, with
/// reason `ReadinessGatesNotReady` and the kubelet's message when only gates hold it back.
/// Pods without gates are left alone. Returns whether the pod changed.
fn apply_readiness_gates(pod: &mut Value) -> bool {
    let gates = readiness_gates(pod);
    if gates.is_empty() {
        return false;
    }
    let mut conditions: Vec<Value> = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let status_of = |conditions: &[Value], ty: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == ty)
            .map(|c| c["status"].as_str().unwrap_or("Unknown").to_owned())
    };
    let current = conditions.iter().find(|c| c["type"] == "Ready").cloned();
    let containers_ready = status_of(&conditions, "ContainersReady").as_deref() == Some("True");
    let desired = if containers_ready {
        let unready: Vec<String> = gates
            .iter()
            .filter_map(|gate| match status_of(&conditions, gate).as_deref() {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {gate:?} does not exist."
                )),
                Some("True") => None,
                Some(status) => Some(format!(
                    "the status of pod readiness gate {gate:?} is not \"True\", but {status}"
                )),
            })
            .collect();
        if unready.is_empty() {
            json!({ "type": "Ready", "status": "True" })
        } else {
            json!({
                "type": "Ready",
                "status": "False",
                "reason": "ReadinessGatesNotReady",
                "message": unready.join(", "),
            })
        }
    } else {
        // Containers not ready: Ready is False, as for pods without gates. A False Ready
        // written by a test is kept unless it blamed the gates.
        match &current {
            Some(c) if c["status"] == "False" && c["reason"] != "ReadinessGatesNotReady" => {
                c.clone()
            }
            _ => json!({ "type": "Ready", "status": "False" }),
        }
    };
    if current.as_ref() == Some(&desired) {
        return false;
    }
    set_condition(&mut conditions, desired);
    pod["status"]["conditions"] = Value::Array(conditions);
    true
}

fn node_internal_ip(node: &Value) -> Option<String> {
    node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .map(str::to_owned)
}

fn pod_is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The EndpointSlice endpoint for a pod, or None when the pod has no IP or has finished.
fn pod_endpoint(
    pod: &Value,
    publish_not_ready: bool,
    zones: &BTreeMap<String, String>,
) -> Option<Value> {
    let ip = pod["status"]["podIP"]
        .as_str()
        .filter(|ip| !ip.is_empty())?;
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let pod_ready = pod_is_ready(pod);
    let terminating = !pod["metadata"]["deletionTimestamp"].is_null();
    let ready = publish_not_ready || (pod_ready && !terminating);
    let mut endpoint = json!({
        "addresses": [ip],
        "conditions": { "ready": ready, "serving": pod_ready, "terminating": terminating },
        "targetRef": {
            "kind": "Pod",
            "namespace": pod["metadata"]["namespace"].clone(),
            "name": pod["metadata"]["name"].clone(),
            "uid": pod["metadata"]["uid"].clone(),
        },
    });
    if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        endpoint["nodeName"] = json!(node);
        if let Some(zone) = zones.get(node) {
            endpoint["zone"] = json!(zone);
        }
    }
    Some(endpoint)
}

/// EndpointPorts for a pod: numeric targetPort as is, missing targetPort = the Service port,
/// named targetPort = the container port of that name and protocol (ports whose name does not
/// resolve are left out for that pod, as the real controller does).
fn resolve_ports(svc_ports: &[Value], pod: &Value) -> Vec<Value> {
    let mut ports = Vec::new();
    for svc_port in svc_ports {
        let protocol = svc_port["protocol"].as_str().unwrap_or("TCP");
        let number = match &svc_port["targetPort"] {
            Value::Number(n) => n.as_u64(),
            Value::String(s) if !s.is_empty() => match s.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => container_port_by_name(pod, s, protocol),
            },
            _ => svc_port["port"].as_u64(),
        };
        let Some(number) = number else {
            continue;
        };
        let mut port = json!({
            "name": svc_port["name"].as_str().unwrap_or(""),
            "protocol": protocol,
            "port": number,
        });
        if let Some(app_protocol) = svc_port["appProtocol"].as_str() {
            port["appProtocol"] = json!(app_protocol);
        }
        ports.push(port);
    }
    ports
}

fn container_port_by_name(pod: &Value, name: &str, protocol: &str) -> Option<u64> {
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == name && p["protocol"].as_str().unwrap_or("TCP") == protocol)
        .and_then(|p| p["containerPort"].as_u64())
}

fn labels_match(labels: &Value, selector: &Map<String, Value>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelRequirement {
    fn matches(&self, labels: &Value) -> bool {
        let get = |key: &str| labels.get(key).and_then(Value::as_str);
        match self {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        }
    }
}

/// Splits on commas outside parentheses.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, ApiError> {
    let invalid = |term: &str| {
        ApiError::bad_request(format!(
            "unable to parse requirement {term:?} in labelSelector {selector:?}"
        ))
    };
    let set_values = |term: &str, rest: &str| -> Result<Vec<String>, ApiError> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| invalid(term))?;
        Ok(inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect())
    };
    let mut requirements = Vec::new();
    for term in split_terms(selector) {
        let requirement = if let Some(key) = term.strip_prefix('!') {
            LabelRequirement::NotExists(key.trim().to_owned())
        } else if let Some((key, rest)) = term.split_once(" notin ") {
            LabelRequirement::NotIn(key.trim().to_owned(), set_values(term, rest)?)
        } else if let Some((key, rest)) = term.split_once(" in ") {
            LabelRequirement::In(key.trim().to_owned(), set_values(term, rest)?)
        } else if let Some((key, value)) = term.split_once("!=") {
            LabelRequirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelRequirement::Equals(key.trim().to_owned(), value.trim().to_owned())
        } else if term.contains(['(', ')', ' ']) {
            return Err(invalid(term));
        } else {
            LabelRequirement::Exists(term.to_owned())
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

#[derive(Debug)]
struct FieldRequirement {
    path: String,
    value: String,
    equal: bool,
}

impl FieldRequirement {
    fn matches(&self, object: &Value) -> bool {
        let mut current = object;
        for part in self.path.split('.') {
            current = &current[part];
        }
        let actual = match current {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (actual == self.value) == self.equal
    }
}

/// `path=value`, `path==value`, `path!=value` terms over any dotted JSON path.
fn parse_field_selector(selector: &str) -> Result<Vec<FieldRequirement>, ApiError> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, false)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector term {term:?}"
                )));
            };
            Ok(FieldRequirement {
                path: path.trim().to_owned(),
                value: value.trim().to_owned(),
                equal,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Whether an API group is served by Kubernetes itself (core, `apps`, `*.k8s.io`) rather than
/// by a CustomResourceDefinition, which takes no strategic merge patches.
fn is_builtin_group(group: &str) -> bool {
    !group.contains('.') || group.ends_with(".k8s.io")
}

/// A strategic merge patch of `status`: `conditions` merge by their key `type` (each patched
/// condition is merged field by field into the stored one of that type, or appended; a
/// condition with `"$patch": "delete"` removes its type; unnamed ones stay), the other
/// fields merge as a JSON merge patch does.
fn strategic_merge_status(status: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        merge_patch(status, patch);
        return;
    };
    let mut rest = fields.clone();
    let conditions_patch = rest.remove("conditions");
    merge_patch(status, &Value::Object(rest));
    let Some(conditions_patch) = conditions_patch else {
        return;
    };
    let Value::Array(patched) = conditions_patch else {
        // null removes the list; anything else replaces it, as in a merge patch.
        merge_patch(status, &json!({ "conditions": conditions_patch }));
        return;
    };
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    for condition in patched {
        let ty = condition["type"].clone();
        if condition["$patch"] == "delete" {
            conditions.retain(|c| c["type"] != ty);
            continue;
        }
        match conditions.iter_mut().find(|c| c["type"] == ty) {
            Some(existing) => merge_patch(existing, &condition),
            None => {
                let mut added = Value::Null;
                merge_patch(&mut added, &condition);
                conditions.push(added);
            }
        }
    }
    status["conditions"] = Value::Array(conditions);
}

fn guess_plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// Opaque continue token: hex of `namespace/name` of the last item returned.
fn encode_continue(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(String, String)> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (namespace, name) = text.split_once('/')?;
    Some((namespace.to_owned(), name.to_owned()))
}

/// Five characters from the alphabet Kubernetes uses for generated names, stable for `input`.
fn short_hash(input: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in input.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let base = ALPHABET.len() as u64;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(hash % base) as usize];
            hash /= base;
            char::from(c)
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Ipv4Pool {
    network: u32,
    prefix: u8,
}

impl Ipv4Pool {
    fn parse(cidr: &str) -> Result<Self, String> {
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| "expected a.b.c.d/prefix".to_owned())?;
        let addr: Ipv4Addr = addr.trim().parse().map_err(|e| format!("{e}"))?;
        let prefix: u8 = prefix
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("bad prefix length {prefix:?}"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Ipv4Pool {
            network: u32::from(addr) & mask,
            prefix,
        })
    }

    /// Usable addresses: the network address (and broadcast, for prefixes below /31) excluded.
    fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        let first = u64::from(self.network);
        let (start, end) = if size > 2 {
            (first + 1, first + size - 1)
        } else {
            (first, first + size)
        };
        (start..end).filter_map(|ip| u32::try_from(ip).ok().map(Ipv4Addr::from))
    }
}

impl std::fmt::Display for Ipv4Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

fn now_timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_timestamp(secs)
}

/// RFC 3339 UTC timestamp with second precision, as Kubernetes writes them.
fn format_timestamp(unix_secs: u64) -> String {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}
