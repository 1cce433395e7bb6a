//! Proves the fake Kubernetes API server in `support/kube_api.rs` speaks the wire format the
//! real `kube` client expects, and that its cluster simulator produces realistic objects.

#[path = "support/kube_api.rs"]
mod kube_api;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

use kube_api::{FORBIDDEN_USER, KubeApi, NodeFixture, PodFixture};

const CONTEXT: &str = "fake-cluster";
const WORKLOAD_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/manifests/seed004-workload.yaml"
);
const TGB_MANIFESTS: [&str; 3] = [
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/manifests/seed004-tgb-alb-ip.yaml"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/manifests/seed004-tgb-alb-instance.yaml"
    ),
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/manifests/seed004-tgb-nlb-ip.yaml"
    ),
];
const IP_SERVICE: &str = "nginx-tgb-svc-alb-ip";
const INSTANCE_SERVICE: &str = "nginx-tgb-svc-alb-instance";
const DEPLOYMENT: &str = "nginx-deployment";

fn read_manifest(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read seed manifest {path}: {err}"))
}

fn node_a() -> NodeFixture {
    NodeFixture::new("node-a", "i-0aaaaaaaaaaaaaaa1", "us-east-1a", "10.0.1.10")
}

fn node_b() -> NodeFixture {
    NodeFixture::new("node-b", "i-0bbbbbbbbbbbbbbb2", "us-east-1b", "10.0.2.20")
}

/// A fake cluster with the seed workload on two nodes, and a kube client for it.
struct Cluster {
    api: KubeApi,
    client: Client,
    _kubeconfig_dir: tempfile::TempDir,
}

async fn empty_cluster() -> Cluster {
    cluster_with_config(|_| {}).await
}

async fn seeded_cluster() -> Cluster {
    let cluster = empty_cluster().await;
    cluster.api.add_node(node_a());
    cluster.api.add_node(node_b());
    cluster.api.apply_yaml(&read_manifest(WORKLOAD_MANIFEST));
    cluster
}

/// Starts a server and builds a client the way the product does: from a kubeconfig file.
async fn cluster_with_config(tweak: impl FnOnce(&mut Config)) -> Cluster {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().expect("create a temp dir for the kubeconfig");
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path, CONTEXT);
    let kubeconfig = Kubeconfig::read_from(&path).expect("read the written kubeconfig");
    let options = KubeConfigOptions {
        context: Some(CONTEXT.to_owned()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("kube accepts the written kubeconfig");
    tweak(&mut config);
    let client = Client::try_from(config).expect("build a kube client");
    Cluster {
        api,
        client,
        _kubeconfig_dir: dir,
    }
}

async fn slices_of(client: &Client, service: &str) -> Vec<EndpointSlice> {
    Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .expect("list EndpointSlices")
        .items
}

/// (pod name, address, ready, serving, terminating) of every endpoint, sorted by pod name.
fn endpoint_rows(slices: &[EndpointSlice]) -> Vec<(String, String, bool, bool, bool)> {
    let mut rows: Vec<_> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            let conditions = e.conditions.clone().unwrap_or_default();
            (
                e.target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .expect("endpoint has a targetRef name"),
                e.addresses
                    .first()
                    .cloned()
                    .expect("endpoint has an address"),
                conditions.ready.expect("ready is set"),
                conditions.serving.expect("serving is set"),
                conditions.terminating.expect("terminating is set"),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn api_error_code(err: &kube::Error) -> Option<(u16, String)> {
    match err {
        kube::Error::Api(status) => Some((status.code, status.reason.clone())),
        _ => None,
    }
}

fn tgb_resource() -> ApiResource {
    ApiResource {
        group: "elbv2.k8s.aws".to_owned(),
        version: "v1beta1".to_owned(),
        api_version: "elbv2.k8s.aws/v1beta1".to_owned(),
        kind: "TargetGroupBinding".to_owned(),
        plural: "targetgroupbindings".to_owned(),
    }
}

fn with_placeholders_filled(manifest: &str) -> String {
    manifest
        .replace(
            "<TG_IP_ARN>",
            "arn:aws:elasticloadbalancing:us-east-1:111122223333:targetgroup/tg-ip/0123456789abcdef",
        )
        .replace(
            "<TG_INSTANCE_ARN>",
            "arn:aws:elasticloadbalancing:us-east-1:111122223333:targetgroup/tg-inst/0123456789abcdef",
        )
        .replace(
            "<TG_ARN>",
            "arn:aws:elasticloadbalancing:us-east-1:111122223333:targetgroup/tg-nlb/0123456789abcdef",
        )
        .replace("<ALB_SG_ID>", "sg-0123456789abcdef0")
}

#[tokio::test]
async fn seed_workload_gives_each_selector_service_one_ready_slice() {
    let cluster = seeded_cluster().await;

    for service in [IP_SERVICE, INSTANCE_SERVICE] {
        let slices = slices_of(&cluster.client, service).await;
        assert_eq!(slices.len(), 1, "one slice for {service}");
        let slice = &slices[0];
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.metadata.namespace.as_deref(), Some("default"));
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("endpointslice.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("endpointslice-controller.k8s.io")
        );
        let ports = slice.ports.clone().expect("slice has ports");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name.as_deref(), Some(""));
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(ports[0].port, Some(80));

        assert_eq!(slice.endpoints.len(), 1);
        let endpoint = &slice.endpoints[0];
        assert_eq!(endpoint.addresses, vec!["192.168.40.1".to_owned()]);
        assert_eq!(endpoint.node_name.as_deref(), Some("node-a"));
        assert_eq!(endpoint.zone.as_deref(), Some("us-east-1a"));
        let target = endpoint.target_ref.as_ref().expect("targetRef");
        assert_eq!(target.kind.as_deref(), Some("Pod"));
        assert_eq!(target.name.as_deref(), Some("nginx-deployment-0"));
        assert!(target.uid.is_some());
        let conditions = endpoint.conditions.as_ref().expect("conditions");
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(true), Some(true), Some(false))
        );
    }

    let services = Api::<Service>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list Services");
    assert_eq!(services.items.len(), 2);
    let instance = services
        .items
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(INSTANCE_SERVICE))
        .expect("the NodePort Service is listed");
    let spec = instance.spec.as_ref().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(
        spec.ports.as_ref().expect("ports")[0].node_port,
        Some(30001)
    );
    assert!(services.metadata.resource_version.is_some());
}

#[tokio::test]
async fn scaling_a_deployment_adds_endpoints_to_its_service_slices() {
    let cluster = seeded_cluster().await;
    cluster.api.scale("default", DEPLOYMENT, 4);

    let slices = slices_of(&cluster.client, IP_SERVICE).await;
    assert_eq!(slices.len(), 1);
    let rows = endpoint_rows(&slices);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "nginx-deployment-0",
            "nginx-deployment-1",
            "nginx-deployment-2",
            "nginx-deployment-3"
        ]
    );
    let addresses: BTreeSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(addresses.len(), 4, "every pod has its own IP: {rows:?}");
    assert!(addresses.iter().all(|a| a.starts_with("192.168.40.")));

    let nodes: Vec<String> = cluster
        .api
        .pods("default")
        .iter()
        .map(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(nodes, ["node-a", "node-b", "node-a", "node-b"]);

    // The first pod keeps its IP across the scale-up, and scaling down drops endpoints again.
    assert_eq!(rows[0].1, "192.168.40.1");
    cluster.api.scale("default", DEPLOYMENT, 2);
    let rows = endpoint_rows(&slices_of(&cluster.client, INSTANCE_SERVICE).await);
    assert_eq!(rows.len(), 2);
}

#[tokio::test]
async fn unready_and_terminating_pods_show_real_endpoint_conditions() {
    let cluster = seeded_cluster().await;
    cluster.api.scale("default", DEPLOYMENT, 3);
    cluster
        .api
        .set_pod_ready("default", "nginx-deployment-0", false);
    cluster
        .api
        .set_pod_terminating("default", "nginx-deployment-1");

    let rows = endpoint_rows(&slices_of(&cluster.client, IP_SERVICE).await);
    let conditions: Vec<(&str, bool, bool, bool)> =
        rows.iter().map(|r| (r.0.as_str(), r.2, r.3, r.4)).collect();
    assert_eq!(
        conditions,
        [
            ("nginx-deployment-0", false, false, false),
            ("nginx-deployment-1", false, true, true),
            ("nginx-deployment-2", true, true, false),
        ]
    );

    // The terminating pod is still listed, with a deletionTimestamp; overrides survive changes.
    cluster.api.scale("default", DEPLOYMENT, 4);
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("list pods");
    assert_eq!(pods.items.len(), 4);
    let terminating = pods
        .items
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("nginx-deployment-1"))
        .expect("terminating pod is listed");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let rows = endpoint_rows(&slices_of(&cluster.client, IP_SERVICE).await);
    assert_eq!((rows[0].2, rows[1].4, rows[3].2), (false, true, true));

    cluster
        .api
        .set_pod_ready("default", "nginx-deployment-0", true);
    let rows = endpoint_rows(&slices_of(&cluster.client, IP_SERVICE).await);
    assert!(rows[0].2, "pod 0 is ready again: {rows:?}");
}

const NAMED_PORT_WORKLOAD: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: multi
  namespace: apps
spec:
  selector:
    app: multi
  ports:
  - name: http
    port: 80
    targetPort: http
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: multi-old
  namespace: apps
spec:
  replicas: 2
  selector: { matchLabels: { app: multi } }
  template:
    metadata:
      labels: { app: multi, track: old }
    spec:
      containers:
      - name: app
        image: app:1
        ports:
        - name: http
          containerPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: multi-new
  namespace: apps
spec:
  replicas: 1
  selector: { matchLabels: { app: multi } }
  template:
    metadata:
      labels: { app: multi, track: new }
    spec:
      containers:
      - name: app
        image: app:2
        ports:
        - name: http
          containerPort: 9090
"#;

#[tokio::test]
async fn named_target_ports_resolve_per_pod_into_separate_slices() {
    let cluster = seeded_cluster().await;
    cluster.api.apply_yaml(NAMED_PORT_WORKLOAD);

    let slices = slices_of(&cluster.client, "multi").await;
    assert_eq!(slices.len(), 2, "one slice per resolved port: {slices:#?}");
    let mut by_port: Vec<(i32, Vec<String>)> = slices
        .iter()
        .map(|slice| {
            let ports = slice.ports.clone().expect("ports");
            assert_eq!(ports.len(), 1);
            assert_eq!(ports[0].name.as_deref(), Some("http"));
            assert_eq!(slice.metadata.namespace.as_deref(), Some("apps"));
            let mut pods: Vec<String> = slice
                .endpoints
                .iter()
                .filter_map(|e| e.target_ref.as_ref().and_then(|r| r.name.clone()))
                .collect();
            pods.sort();
            (ports[0].port.expect("port number"), pods)
        })
        .collect();
    by_port.sort();
    assert_eq!(
        by_port,
        [
            (
                8080,
                vec!["multi-old-0".to_owned(), "multi-old-1".to_owned()]
            ),
            (9090, vec!["multi-new-0".to_owned()]),
        ]
    );

    // Slice names are stable across recomputation.
    let names: BTreeSet<Option<String>> = slices.iter().map(|s| s.metadata.name.clone()).collect();
    cluster.api.scale("apps", "multi-old", 3);
    let again = slices_of(&cluster.client, "multi").await;
    let names_again: BTreeSet<Option<String>> =
        again.iter().map(|s| s.metadata.name.clone()).collect();
    assert_eq!(names, names_again);
}

#[tokio::test]
async fn host_network_pods_take_the_internal_ip_of_their_node() {
    let cluster = seeded_cluster().await;
    cluster.api.apply_yaml(
        r#"
apiVersion: v1
kind: Service
metadata: { name: agent }
spec:
  selector: { app: agent }
  ports: [{ port: 9100 }]
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: agent }
spec:
  replicas: 2
  selector: { matchLabels: { app: agent } }
  template:
    metadata: { labels: { app: agent } }
    spec:
      hostNetwork: true
      containers: [{ name: agent, image: agent }]
"#,
    );

    let rows = endpoint_rows(&slices_of(&cluster.client, "agent").await);
    let addresses: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(addresses, ["10.0.1.10", "10.0.2.20"]);
    let slices = slices_of(&cluster.client, "agent").await;
    let port = slices[0].ports.as_ref().expect("ports")[0].port;
    assert_eq!(
        port,
        Some(9100),
        "a missing targetPort means the Service port"
    );

    let pod = Api::<Pod>::namespaced(cluster.client.clone(), "default")
        .get("agent-1")
        .await
        .expect("get the hostNetwork pod");
    let status = pod.status.expect("status");
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.2.20"));
    assert_eq!(status.host_ip.as_deref(), Some("10.0.2.20"));
}

#[tokio::test]
async fn listing_with_a_limit_pages_through_continue_tokens() {
    let cluster = seeded_cluster().await;
    cluster.api.scale("default", DEPLOYMENT, 4);
    let pods = Api::<Pod>::all(cluster.client.clone());

    let mut names = Vec::new();
    let mut params = ListParams::default().limit(1);
    for _page in 0..10 {
        let page = pods.list(&params).await.expect("list a page of pods");
        assert!(page.metadata.resource_version.is_some());
        assert_eq!(page.items.len(), 1);
        names.extend(page.items.iter().filter_map(|p| p.metadata.name.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = ListParams::default().limit(1).continue_token(&token),
            None => break,
        }
    }
    assert_eq!(
        names,
        [
            "nginx-deployment-0",
            "nginx-deployment-1",
            "nginx-deployment-2",
            "nginx-deployment-3"
        ]
    );
    assert_eq!(cluster.api.request_count("GET /api/v1/pods?limit=1"), 4);

    let everything = pods
        .list(&ListParams::default())
        .await
        .expect("list all pods");
    assert_eq!(everything.items.len(), 4);
    assert_eq!(everything.metadata.continue_, None);
}

#[tokio::test]
async fn label_selectors_filter_lists_like_the_apiserver() {
    let cluster = seeded_cluster().await;
    cluster.api.apply_yaml(NAMED_PORT_WORKLOAD);
    let pods = Api::<Pod>::all(cluster.client.clone());
    let names = |selector: &'static str| {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap_or_else(|err| panic!("list pods with {selector:?}: {err}"));
            list.items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<_>>()
        }
    };

    assert_eq!(names("app=nginx").await, ["nginx-deployment-0"]);
    assert_eq!(names("app==multi,track=new").await, ["multi-new-0"]);
    assert_eq!(names("app!=multi").await, ["nginx-deployment-0"]);
    assert_eq!(names("track").await.len(), 3);
    assert_eq!(names("!track").await, ["nginx-deployment-0"]);
    assert_eq!(names("track in (new, other)").await, ["multi-new-0"]);
    assert_eq!(
        names("track notin (old)").await,
        ["multi-new-0", "nginx-deployment-0"]
    );
    assert!(names("app=nothing").await.is_empty());
}

#[tokio::test]
async fn a_missing_object_is_a_404_status_that_kube_maps_to_an_api_error() {
    let cluster = seeded_cluster().await;

    let err = Api::<Service>::namespaced(cluster.client.clone(), "default")
        .get("no-such-service")
        .await
        .expect_err("a missing Service is an error");
    assert_eq!(
        api_error_code(&err),
        Some((404, "NotFound".to_owned())),
        "{err:?}"
    );

    let widgets = ApiResource {
        group: "example.com".to_owned(),
        version: "v1".to_owned(),
        api_version: "example.com/v1".to_owned(),
        kind: "Widget".to_owned(),
        plural: "widgets".to_owned(),
    };
    let err = Api::<DynamicObject>::all_with(cluster.client.clone(), &widgets)
        .list(&ListParams::default())
        .await
        .expect_err("an unknown resource type is an error");
    assert_eq!(
        api_error_code(&err),
        Some((404, "NotFound".to_owned())),
        "{err:?}"
    );
}

#[tokio::test]
async fn injected_500_and_403_failures_surface_with_their_codes() {
    let cluster = seeded_cluster().await;
    let nodes = Api::<Node>::all(cluster.client.clone());

    for (code, reason) in [
        (500, "InternalError"),
        (403, "Forbidden"),
        (401, "Unauthorized"),
    ] {
        cluster.api.fail_with(Some(code));
        let err = nodes
            .list(&ListParams::default())
            .await
            .expect_err("an injected failure is an error");
        assert_eq!(
            api_error_code(&err),
            Some((code, reason.to_owned())),
            "{err:?}"
        );
    }

    cluster.api.fail_with(None);
    let list = nodes.list(&ListParams::default()).await.expect("recovered");
    assert_eq!(list.items.len(), 2);
}

#[tokio::test]
async fn transient_503s_are_retried_by_the_kube_client_unless_retry_is_off() {
    // kube 5 retries 429/503/504 by default with backoff (up to 15 times).
    let cluster = seeded_cluster().await;
    cluster.api.fail_next(503, 2);
    let nodes = Api::<Node>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .expect("the client retries past two 503s");
    assert_eq!(nodes.items.len(), 2);
    assert_eq!(cluster.api.request_count("GET /api/v1/nodes"), 3);

    let no_retry = cluster_with_config(|config| config.default_retry = false).await;
    no_retry.api.fail_with(Some(503));
    let err = Api::<Node>::all(no_retry.client.clone())
        .list(&ListParams::default())
        .await
        .expect_err("a 503 without retries is an error");
    assert_eq!(
        api_error_code(&err),
        Some((503, "ServiceUnavailable".to_owned()))
    );
    assert_eq!(no_retry.api.requests().len(), 1);
}

#[tokio::test]
async fn requests_carry_the_kubeconfig_bearer_token_and_are_recorded() {
    let cluster = seeded_cluster().await;
    assert_eq!(cluster.api.last_authorization(), None);
    assert!(cluster.api.url().starts_with("http://127.0.0.1:"));

    Api::<Node>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    slices_of(&cluster.client, IP_SERVICE).await;

    assert_eq!(
        cluster.api.last_authorization().as_deref(),
        Some("Bearer test-token")
    );
    assert_eq!(
        cluster.api.requests(),
        [
            "GET /api/v1/nodes".to_owned(),
            format!(
                "GET /apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io/service-name={IP_SERVICE}"
            ),
        ]
    );
}

#[tokio::test]
async fn target_group_binding_seed_manifests_come_back_as_dynamic_objects_with_spec_intact() {
    let cluster = seeded_cluster().await;
    let mut expected_specs = Vec::new();
    for path in TGB_MANIFESTS {
        let manifest = with_placeholders_filled(&read_manifest(path));
        let parsed: Value = serde_saphyr::from_str(&manifest)
            .unwrap_or_else(|err| panic!("{path} is valid YAML: {err}"));
        let name = parsed["metadata"]["name"]
            .as_str()
            .expect("manifest has a name")
            .to_owned();
        expected_specs.push((name, parsed["spec"].clone()));
        cluster.api.apply_yaml(&manifest);
    }
    expected_specs.sort_by(|a, b| a.0.cmp(&b.0));

    let resource = tgb_resource();
    let all = Api::<DynamicObject>::all_with(cluster.client.clone(), &resource)
        .list(&ListParams::default())
        .await
        .expect("list TargetGroupBindings");
    let listed: Vec<(String, Value)> = all
        .items
        .iter()
        .map(|tgb| {
            let types = tgb.types.as_ref().expect("items keep apiVersion and kind");
            assert_eq!(types.api_version, "elbv2.k8s.aws/v1beta1");
            assert_eq!(types.kind, "TargetGroupBinding");
            assert_eq!(tgb.metadata.namespace.as_deref(), Some("default"));
            assert_eq!(tgb.metadata.generation, Some(1));
            (
                tgb.metadata.name.clone().expect("name"),
                tgb.data["spec"].clone(),
            )
        })
        .collect();
    assert_eq!(listed, expected_specs);

    let one = Api::<DynamicObject>::namespaced_with(cluster.client.clone(), "default", &resource)
        .get("my-tgb-alb-ip")
        .await
        .expect("get one TargetGroupBinding");
    assert_eq!(
        one.data["spec"]["targetGroupARN"],
        "arn:aws:elasticloadbalancing:us-east-1:111122223333:targetgroup/tg-ip/0123456789abcdef"
    );
    assert_eq!(
        one.data["spec"]["serviceRef"],
        json!({ "name": IP_SERVICE, "port": 80 })
    );

    // The raw seed text, placeholders and all, loads too.
    cluster.api.apply_yaml(&read_manifest(TGB_MANIFESTS[0]));
    let raw = cluster
        .api
        .get("TargetGroupBinding", None, "my-tgb-alb-ip")
        .expect("stored");
    assert_eq!(raw["spec"]["targetGroupARN"], "<TG_IP_ARN>");
    assert_eq!(
        raw["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );
}

#[tokio::test]
async fn a_response_delay_longer_than_the_read_timeout_fails_the_call() {
    let cluster =
        cluster_with_config(|config| config.read_timeout = Some(Duration::from_millis(200))).await;
    cluster.api.add_node(node_a());
    let nodes = Api::<Node>::all(cluster.client.clone());

    cluster.api.delay(Some(Duration::from_secs(5)));
    let started = Instant::now();
    let result = nodes.list(&ListParams::default()).await;
    assert!(result.is_err(), "a delayed answer times out: {result:?}");
    assert!(started.elapsed() < Duration::from_secs(4));

    cluster.api.delay(None);
    let list = nodes.list(&ListParams::default()).await.expect("no delay");
    assert_eq!(list.items.len(), 1);
}

#[tokio::test]
async fn nodes_list_with_provider_ids_zones_taints_and_readiness() {
    let cluster = empty_cluster().await;
    cluster.api.add_node(node_a());
    cluster.api.add_node(
        node_b()
            .with_label("eks.amazonaws.com/nodegroup", "ng-1")
            .with_taint("dedicated", "NoSchedule")
            .with_provider_id("aws:///us-east-1b/i-custom"),
    );
    cluster.api.set_node_ready("node-a", false);

    let nodes = Api::<Node>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list nodes")
        .items;
    assert_eq!(nodes.len(), 2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let spec_a = a.spec.as_ref().expect("spec");
    assert_eq!(
        spec_a.provider_id.as_deref(),
        Some("aws:///us-east-1a/i-0aaaaaaaaaaaaaaa1")
    );
    let status_a = a.status.as_ref().expect("status");
    let ready = status_a
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .expect("Ready condition");
    assert_eq!(ready.status, "False");
    let address = &status_a.addresses.as_ref().expect("addresses")[0];
    assert_eq!(
        (address.type_.as_str(), address.address.as_str()),
        ("InternalIP", "10.0.1.10")
    );

    let labels_b = b.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels_b
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("us-east-1b")
    );
    assert_eq!(
        labels_b
            .get("eks.amazonaws.com/nodegroup")
            .map(String::as_str),
        Some("ng-1")
    );
    let spec_b = b.spec.as_ref().expect("spec");
    assert_eq!(
        spec_b.provider_id.as_deref(),
        Some("aws:///us-east-1b/i-custom")
    );
    let taint = &spec_b.taints.as_ref().expect("taints")[0];
    assert_eq!(
        (taint.key.as_str(), taint.effect.as_str()),
        ("dedicated", "NoSchedule")
    );
}

#[tokio::test]
async fn services_and_deployments_without_matches_or_nodes_behave_like_kubernetes() {
    let cluster = empty_cluster().await;
    cluster.api.set_pod_ip_pool("172.20.8.0/30");
    cluster.api.apply_yaml(&read_manifest(WORKLOAD_MANIFEST));
    cluster.api.apply_yaml(
        r#"
apiVersion: v1
kind: Service
metadata: { name: lonely, namespace: edge }
spec:
  type: NodePort
  selector: { app: nobody }
  ports: [{ port: 80 }, { port: 443, nodePort: 30000 }]
---
apiVersion: v1
kind: Service
metadata: { name: external }
spec:
  ports: [{ port: 80 }]
"#,
    );

    // A selector that matches nothing still gets one (empty) slice; no selector, no slice.
    let lonely = slices_of(&cluster.client, "lonely").await;
    assert_eq!(lonely.len(), 1);
    assert!(lonely[0].endpoints.is_empty());
    assert!(slices_of(&cluster.client, "external").await.is_empty());

    // A missing nodePort is allocated from 30000 upward, skipping used ones.
    let svc = Api::<Service>::namespaced(cluster.client.clone(), "edge")
        .get("lonely")
        .await
        .expect("get Service");
    let ports = svc.spec.and_then(|s| s.ports).expect("ports");
    assert_eq!(
        ports.iter().map(|p| p.node_port).collect::<Vec<_>>(),
        [Some(30002), Some(30000)],
        "30001 belongs to the seed Service"
    );

    // Without nodes pods are unscheduled but still get pool IPs.
    let pods = cluster.api.pods("default");
    assert_eq!(pods[0]["spec"]["nodeName"], "");
    assert_eq!(pods[0]["status"]["podIP"], "172.20.8.1");
    cluster.api.add_node(node_b());
    assert_eq!(cluster.api.pods("default")[0]["spec"]["nodeName"], "node-b");

    // Deleting the Deployment empties its Services' slices.
    cluster.api.delete("Deployment", None, DEPLOYMENT);
    assert!(cluster.api.pods("default").is_empty());
    let slices = slices_of(&cluster.client, IP_SERVICE).await;
    assert_eq!(slices.len(), 1);
    assert!(slices[0].endpoints.is_empty());
}

#[tokio::test]
async fn objects_written_through_the_api_are_stored_and_recomputed() {
    let cluster = seeded_cluster().await;
    let services = Api::<Service>::namespaced(cluster.client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "created" },
        "spec": { "selector": { "app": "nginx" }, "ports": [{ "port": 8080, "targetPort": 80 }] },
    }))
    .expect("a valid Service");
    let created = services
        .create(&PostParams::default(), &service)
        .await
        .expect("create a Service");
    assert!(created.metadata.uid.is_some());
    let rows = endpoint_rows(&slices_of(&cluster.client, "created").await);
    assert_eq!(rows.len(), 1);

    let err = services
        .create(&PostParams::default(), &service)
        .await
        .expect_err("creating twice conflicts");
    assert_eq!(
        api_error_code(&err),
        Some((409, "AlreadyExists".to_owned()))
    );

    cluster
        .api
        .apply_yaml(&with_placeholders_filled(&read_manifest(TGB_MANIFESTS[0])));
    let tgbs =
        Api::<DynamicObject>::namespaced_with(cluster.client.clone(), "default", &tgb_resource());
    let patched = tgbs
        .patch_status(
            "my-tgb-alb-ip",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "observedGeneration": 1 } })),
        )
        .await
        .expect("patch TargetGroupBinding status");
    assert_eq!(patched.data["status"]["observedGeneration"], 1);
    assert_eq!(patched.data["spec"]["serviceRef"]["name"], IP_SERVICE);

    services
        .delete("created", &DeleteParams::default())
        .await
        .expect("delete the Service");
    assert!(slices_of(&cluster.client, "created").await.is_empty());
}

#[tokio::test]
async fn a_stopped_server_fails_kept_alive_and_in_flight_requests() {
    let cluster = seeded_cluster().await;
    let nodes = Api::<Node>::all(cluster.client.clone());
    nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes while the server runs");

    cluster.api.stop();
    let result = tokio::time::timeout(Duration::from_secs(5), nodes.list(&ListParams::default()))
        .await
        .expect("a stopped server answers quickly");
    assert!(
        result.is_err(),
        "a stopped server is unreachable: {result:?}"
    );

    let other = seeded_cluster().await;
    other.api.delay(Some(Duration::from_millis(300)));
    let nodes = Api::<Node>::all(other.client.clone());
    let in_flight = tokio::spawn(async move { nodes.list(&ListParams::default()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    other.api.stop();
    let result = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the in-flight request ends quickly")
        .expect("the request task does not panic");
    assert!(result.is_err(), "an in-flight request fails: {result:?}");
}

#[tokio::test]
async fn field_selectors_filter_and_stale_replaces_conflict() {
    let cluster = seeded_cluster().await;
    cluster.api.scale("default", DEPLOYMENT, 3);
    let pods = Api::<Pod>::all(cluster.client.clone());
    let on_b = pods
        .list(&ListParams::default().fields("spec.nodeName=node-b"))
        .await
        .expect("list pods by node");
    let names: Vec<String> = on_b
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["nginx-deployment-1"]);

    let services = Api::<Service>::namespaced(cluster.client.clone(), "default");
    let mut service = services.get(IP_SERVICE).await.expect("get Service");
    let stale = service.clone();
    service
        .metadata
        .labels
        .get_or_insert_default()
        .insert("team".to_owned(), "edge".to_owned());
    let replaced = services
        .replace(IP_SERVICE, &PostParams::default(), &service)
        .await
        .expect("replace with the current resourceVersion");
    assert_ne!(
        replaced.metadata.resource_version,
        stale.metadata.resource_version
    );
    let err = services
        .replace(IP_SERVICE, &PostParams::default(), &stale)
        .await
        .expect_err("a stale resourceVersion conflicts");
    assert_eq!(api_error_code(&err), Some((409, "Conflict".to_owned())));

    // Generated slices copy the Service's labels, as the real controller does.
    let slice = &slices_of(&cluster.client, IP_SERVICE).await[0];
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("edge"));
}

const GATE: &str = "target-health.elbv2.k8s.aws/web";

/// A pod `web-1` outside any Deployment, selected by both seed Services, gated on [`GATE`].
fn gated_web_pod() -> Value {
    PodFixture::new("default", "web-1", "192.168.50.7", "node-a")
        .with_label("app", "nginx")
        .with_port(80)
        .with_gate(GATE)
        .to_object()
}

fn gate_patch(status: &str) -> Patch<Value> {
    Patch::Strategic(json!({ "status": { "conditions": [{
        "type": GATE,
        "status": status,
        "reason": "Healthy",
        "message": "Target is in healthy state",
    }] } }))
}

/// (status, reason, message) of a pod condition, "" for what is missing.
fn condition_of(api: &KubeApi, pod: &str, ty: &str) -> (String, String, String) {
    let condition = api
        .pod_condition("default", pod, ty)
        .unwrap_or_else(|| panic!("pod {pod} has no {ty} condition"));
    let field = |name: &str| condition[name].as_str().unwrap_or_default().to_owned();
    (field("status"), field("reason"), field("message"))
}

fn condition_types(api: &KubeApi, pod: &str) -> Vec<String> {
    api.get("Pod", Some("default"), pod)
        .expect("the pod exists")["status"]["conditions"]
        .as_array()
        .expect("the pod has conditions")
        .iter()
        .map(|c| c["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// (ready, serving) of the pod's endpoint in the IP Service's slices.
async fn endpoint_of(client: &Client, pod: &str) -> (bool, bool) {
    let rows = endpoint_rows(&slices_of(client, IP_SERVICE).await);
    let row = rows
        .iter()
        .find(|r| r.0 == pod)
        .unwrap_or_else(|| panic!("{pod} has an endpoint: {rows:?}"));
    (row.2, row.3)
}

#[tokio::test]
async fn a_gated_pod_is_ready_only_while_its_gate_condition_is_true_and_its_endpoint_follows() {
    let cluster = seeded_cluster().await;
    cluster.api.apply(gated_web_pod());
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), "default");

    let missing = format!("corresponding condition of pod readiness gate {GATE:?} does not exist.");
    assert_eq!(
        condition_of(&cluster.api, "web-1", "ContainersReady").0,
        "True"
    );
    assert_eq!(
        condition_of(&cluster.api, "web-1", "Ready"),
        (
            "False".to_owned(),
            "ReadinessGatesNotReady".to_owned(),
            missing
        )
    );
    let rows = endpoint_rows(&slices_of(&cluster.client, IP_SERVICE).await);
    assert!(
        rows.contains(&(
            "web-1".to_owned(),
            "192.168.50.7".to_owned(),
            false,
            false,
            false
        )),
        "the gated pod is listed, not ready: {rows:?}"
    );

    pods.patch_status("web-1", &PatchParams::default(), &gate_patch("True"))
        .await
        .expect("patch the gate condition to True");
    assert_eq!(
        condition_of(&cluster.api, "web-1", "Ready"),
        ("True".to_owned(), String::new(), String::new())
    );
    let pod = pods.get("web-1").await.expect("get the pod");
    let ready = pod
        .status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready.status, "True");
    assert_eq!(endpoint_of(&cluster.client, "web-1").await, (true, true));

    pods.patch_status("web-1", &PatchParams::default(), &gate_patch("False"))
        .await
        .expect("patch the gate condition to False");
    assert_eq!(
        condition_of(&cluster.api, "web-1", "Ready"),
        (
            "False".to_owned(),
            "ReadinessGatesNotReady".to_owned(),
            format!("the status of pod readiness gate {GATE:?} is not \"True\", but False")
        )
    );
    assert_eq!(endpoint_of(&cluster.client, "web-1").await, (false, false));

    // With the gate True, unready containers make the pod unready, and ready ones Ready again.
    pods.patch_status("web-1", &PatchParams::default(), &gate_patch("True"))
        .await
        .expect("patch the gate condition to True again");
    cluster.api.set_pod_ready("default", "web-1", false);
    assert_eq!(
        condition_of(&cluster.api, "web-1", "ContainersReady").0,
        "False"
    );
    assert_eq!(
        condition_of(&cluster.api, "web-1", "Ready"),
        ("False".to_owned(), String::new(), String::new())
    );
    assert_eq!(endpoint_of(&cluster.client, "web-1").await, (false, false));
    cluster.api.set_pod_ready("default", "web-1", true);
    assert_eq!(condition_of(&cluster.api, "web-1", "Ready").0, "True");
    assert_eq!(endpoint_of(&cluster.client, "web-1").await, (true, true));
}

#[tokio::test]
async fn a_strategic_merge_patch_merges_conditions_by_type_and_keeps_the_kubelets() {
    let cluster = seeded_cluster().await;
    cluster.api.apply(gated_web_pod());
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), "default");

    pods.patch_status("web-1", &PatchParams::default(), &gate_patch("True"))
        .await
        .expect("first patch");
    // The second names only the status: the reason and message of the first stay.
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Strategic(
            json!({ "status": { "conditions": [{ "type": GATE, "status": "False" }] } }),
        ),
    )
    .await
    .expect("second patch");
    assert_eq!(
        condition_types(&cluster.api, "web-1"),
        [
            "PodScheduled",
            "Initialized",
            "ContainersReady",
            "Ready",
            GATE
        ]
    );
    assert_eq!(
        condition_of(&cluster.api, "web-1", GATE),
        (
            "False".to_owned(),
            "Healthy".to_owned(),
            "Target is in healthy state".to_owned()
        )
    );
    assert_eq!(
        condition_of(&cluster.api, "web-1", "PodScheduled").0,
        "True"
    );
    assert_eq!(condition_of(&cluster.api, "web-1", "Ready").0, "False");

    // A JSON merge patch replaces the whole list, as Kubernetes does.
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "conditions": [{ "type": GATE, "status": "True" }] } })),
    )
    .await
    .expect("merge patch");
    let types = condition_types(&cluster.api, "web-1");
    assert!(
        !types.iter().any(|t| t == "PodScheduled"),
        "a merge patch replaced the list: {types:?}"
    );
    assert_eq!(types.iter().filter(|t| *t == GATE).count(), 1);
}

const GATED_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: { matchLabels: { app: nginx } }
  template:
    metadata:
      labels: { app: nginx, tier: web }
    spec:
      readinessGates:
      - conditionType: target-health.elbv2.k8s.aws/web
      containers:
      - name: nginx
        image: nginx
        ports:
        - containerPort: 80
"#;

#[tokio::test]
async fn a_gate_condition_on_a_deployment_pod_survives_recomputation() {
    let cluster = seeded_cluster().await;
    cluster.api.apply_yaml(GATED_DEPLOYMENT);
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), "default");

    let pod = cluster
        .api
        .get("Pod", Some("default"), "web-0")
        .expect("web-0");
    assert_eq!(
        pod["spec"]["readinessGates"],
        json!([{ "conditionType": GATE }])
    );
    assert_eq!(
        condition_of(&cluster.api, "web-0", "Ready").1,
        "ReadinessGatesNotReady"
    );
    assert_eq!(endpoint_of(&cluster.client, "web-0").await, (false, false));
    let deployment = cluster
        .api
        .get("Deployment", Some("default"), "web")
        .expect("the Deployment");
    assert_eq!(deployment["status"]["readyReplicas"], 0);

    pods.patch_status("web-0", &PatchParams::default(), &gate_patch("True"))
        .await
        .expect("patch the gate of web-0");
    assert_eq!(condition_of(&cluster.api, "web-0", "Ready").0, "True");
    assert_eq!(endpoint_of(&cluster.client, "web-0").await, (true, true));
    assert_eq!(
        cluster
            .api
            .get("Deployment", Some("default"), "web")
            .expect("web")["status"]["readyReplicas"],
        1
    );

    // Other changes recompute every generated pod: the gate condition stays, and pods that do
    // not change are not rewritten (no new resourceVersion, so no watch event).
    let version = |pod: &str| {
        cluster
            .api
            .get("Pod", Some("default"), pod)
            .expect("the pod")["metadata"]["resourceVersion"]
            .clone()
    };
    let before = (version("web-0"), version("web-1"));
    cluster.api.scale("default", DEPLOYMENT, 3);
    cluster.api.apply_yaml(&read_manifest(WORKLOAD_MANIFEST));
    assert_eq!((version("web-0"), version("web-1")), before);
    assert_eq!(condition_of(&cluster.api, "web-0", GATE).0, "True");
    assert_eq!(condition_of(&cluster.api, "web-0", "Ready").0, "True");
    assert_eq!(
        condition_of(&cluster.api, "web-1", "Ready").1,
        "ReadinessGatesNotReady"
    );

    // The readiness override means the containers: with them unready the gate no longer counts.
    cluster.api.set_pod_ready("default", "web-0", false);
    assert_eq!(
        condition_of(&cluster.api, "web-0", "ContainersReady").0,
        "False"
    );
    assert_eq!(condition_of(&cluster.api, "web-0", "Ready").0, "False");
    assert_eq!(condition_of(&cluster.api, "web-0", GATE).0, "True");
    cluster.api.set_pod_ready("default", "web-0", true);
    assert_eq!(condition_of(&cluster.api, "web-0", "Ready").0, "True");
}

#[tokio::test]
async fn forbidden_pod_status_patches_answer_403_while_pod_lists_and_other_status_work() {
    let cluster = seeded_cluster().await;
    cluster.api.apply(gated_web_pod());
    cluster.api.forbid_pod_status_patch(true);
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), "default");

    let err = pods
        .patch_status("web-1", &PatchParams::default(), &gate_patch("True"))
        .await
        .expect_err("the status patch is forbidden");
    let kube::Error::Api(status) = &err else {
        panic!("an API error: {err:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        format!(
            "pods \"web-1\" is forbidden: User \"{FORBIDDEN_USER}\" cannot patch resource \"pods/status\" in API group \"\" in the namespace \"default\""
        )
    );
    assert_eq!(cluster.api.forbidden_pod_status_writes(), 1);
    assert_eq!(
        cluster
            .api
            .request_count("PATCH /api/v1/namespaces/default/pods/web-1/status"),
        1
    );
    assert!(
        cluster
            .api
            .pod_condition("default", "web-1", GATE)
            .is_none()
    );

    // Reads of pods, and other kinds' status, are served.
    let listed = Api::<Pod>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .expect("list pods");
    assert_eq!(listed.items.len(), 2);
    pods.get_status("web-1").await.expect("read the pod status");
    cluster
        .api
        .apply_yaml(&with_placeholders_filled(&read_manifest(TGB_MANIFESTS[0])));
    Api::<DynamicObject>::namespaced_with(cluster.client.clone(), "default", &tgb_resource())
        .patch_status(
            "my-tgb-alb-ip",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "observedGeneration": 1 } })),
        )
        .await
        .expect("a TargetGroupBinding status patch is allowed");
    assert_eq!(cluster.api.forbidden_pod_status_writes(), 1);

    cluster.api.forbid_pod_status_patch(false);
    pods.patch_status("web-1", &PatchParams::default(), &gate_patch("True"))
        .await
        .expect("allowed again");
    assert_eq!(condition_of(&cluster.api, "web-1", "Ready").0, "True");
}
