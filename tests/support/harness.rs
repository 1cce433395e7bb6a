//! One test's whole world: a moto server with the seed 004 AWS resources, the Kubernetes test
//! API server with two nodes, the state table, and the product's real adapters wired to both.

use super::kube_api::{KubeApi, NodeFixture};
use super::moto::Moto;
use super::world::World;
use std::path::PathBuf;
use tgb_reconciler::adapters::Aws;
use tgb_reconciler::adapters::eks::{ClusterAccess, ClusterConnector};
use tgb_reconciler::adapters::pacing::Pacing;
use tgb_reconciler::pure::outcome::ClusterOutcome;
use tgb_reconciler::pure::scope::Scope;
use tgb_reconciler::shell::cluster_run::RunOptions;
use tgb_reconciler::shell::session::{Session, reconcile_clusters};
use tgb_reconciler::state::lease::LeaseTerms;

pub const CLUSTER: &str = "demo";
pub const TABLE: &str = "tgb-state";
/// Inside the VPC, outside both subnets, so no pod IP can ever equal a node address.
pub const POD_IP_POOL: &str = "192.168.128.0/24";

pub struct Harness {
    pub kube: KubeApi,
    pub world: World,
    pub aws: Aws,
    pub connector: ClusterConnector,
    pub kubeconfig: PathBuf,
    pub policy: tgb_reconciler::pure::plan::Policy,
    /// How long the runs' leases last.
    pub lease_seconds: u64,
    _dir: tempfile::TempDir,
    pub moto: Moto,
}

/// Every instance of the world as a Ready node `node-<i>` of `kube`.
pub fn add_nodes(kube: &KubeApi, world: &World) {
    for (i, instance) in world.instances.iter().enumerate() {
        kube.add_node(NodeFixture::new(
            &World::node_name(i),
            &instance.id,
            &instance.zone,
            &instance.private_ip,
        ));
    }
}

/// A seed manifest of `tests/fixtures/manifests`, with placeholders replaced.
pub fn manifest(name: &str, replacements: &[(&str, &str)]) -> String {
    let path = format!(
        "{}/tests/fixtures/manifests/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    for (placeholder, value) in replacements {
        text = text.replace(placeholder, value);
    }
    text
}

impl Harness {
    pub async fn start() -> Harness {
        let moto = Moto::start();
        let sdk = moto.sdk_config().await;
        let world = World::create(&sdk).await;
        // moto has no rate buckets: pacing would only slow the tests and keep runs apart.
        let aws = Aws::paced(sdk.clone(), TABLE, Pacing::unlimited());
        aws.store
            .create_table()
            .await
            .expect("create the state table");
        let kube = KubeApi::start().await;
        kube.set_pod_ip_pool(POD_IP_POOL);
        add_nodes(&kube, &world);
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig, CLUSTER);
        let connector = ClusterConnector::new(
            ClusterAccess::Kubeconfig(vec![kubeconfig.clone()]),
            &sdk,
            aws.calls.clone(),
        );
        Harness {
            kube,
            world,
            aws,
            connector,
            kubeconfig,
            policy: Default::default(),
            lease_seconds: 60,
            _dir: dir,
            moto,
        }
    }

    /// The walkthrough's nginx Deployment and its two Services.
    pub fn load_workload(&self) {
        self.kube
            .apply_yaml(&manifest("seed004-workload.yaml", &[]));
    }

    /// Loads the walkthrough's ip binding against a fresh ip target group; returns its ARN.
    pub async fn ip_walkthrough(&self) -> String {
        self.load_workload();
        let tg = self.ip_target_group().await;
        self.kube.apply_yaml(&self.ip_binding(&tg));
        tg
    }

    /// A fresh ip target group for the walkthrough's binding; its ARN.
    pub async fn ip_target_group(&self) -> String {
        self.world
            .target_group(
                "tg-ip",
                aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip,
                80,
                &[],
            )
            .await
    }

    /// The walkthrough's ip binding (`my-tgb-alb-ip`) on `tg`, as YAML.
    pub fn ip_binding(&self, tg: &str) -> String {
        manifest(
            "seed004-tgb-alb-ip.yaml",
            &[
                ("<TG_IP_ARN>", tg),
                ("<ALB_SG_ID>", &self.world.alb_security_group),
            ],
        )
    }

    /// Loads the walkthrough's instance binding (NodePort 30001) against a fresh instance
    /// target group; returns its ARN. The workload must be loaded already.
    pub async fn instance_binding(&self) -> String {
        let tg = self
            .world
            .target_group(
                "tg-instance",
                aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance,
                80,
                &[],
            )
            .await;
        self.kube.apply_yaml(&manifest(
            "seed004-tgb-alb-instance.yaml",
            &[
                ("<TG_INSTANCE_ARN>", &tg),
                ("<ALB_SG_ID>", &self.world.alb_security_group),
            ],
        ));
        tg
    }

    pub async fn reconcile(&self) -> ClusterOutcome {
        self.run(false).await
    }

    pub async fn dry_run(&self) -> ClusterOutcome {
        self.run(true).await
    }

    /// Pod IPs onto their nodes' interfaces, as the VPC CNI would have done.
    pub async fn place_pods(&self) {
        self.world.place_pods(&self.kube.pods("default")).await;
    }

    async fn run(&self, dry_run: bool) -> ClusterOutcome {
        self.place_pods().await;
        let mut outcomes =
            reconcile_clusters(&self.session(dry_run), &[(CLUSTER.into(), Scope::Cluster)]).await;
        outcomes.pop().expect("one outcome per cluster")
    }

    /// What `reconcile` and the Lambda handler run with: this harness's cluster, policy and a
    /// lease of its own.
    pub fn session(&self, dry_run: bool) -> Session<'_> {
        self.session_with(self.connector.clone(), &[CLUSTER], dry_run)
    }

    /// [`Harness::session`], reaching AWS through `aws` (clients of a proxy, say).
    pub fn session_on<'a>(&'a self, aws: &'a Aws, dry_run: bool) -> Session<'a> {
        Session {
            aws,
            ..self.session(dry_run)
        }
    }

    pub fn session_with(
        &self,
        connector: ClusterConnector,
        clusters: &[&str],
        dry_run: bool,
    ) -> Session<'_> {
        Session {
            aws: &self.aws,
            connector,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            policy: self.policy.clone(),
            options: RunOptions {
                dry_run,
                lease: Some(LeaseTerms::new("test", self.lease_seconds)),
                deadline: None,
            },
        }
    }

    /// Reconciles and asserts the run applied everything it planned.
    pub async fn converge(&self) -> ClusterOutcome {
        let outcome = self.reconcile().await;
        let report = outcome
            .report
            .as_ref()
            .unwrap_or_else(|| panic!("nothing applied:\n{}", outcome.plan));
        assert!(
            report.is_clean(),
            "apply failed:\n{}\n{report}",
            outcome.plan
        );
        outcome
    }

    /// Clients of the product's own retry configuration ([`Aws::retrying`], which the harness's
    /// own `aws` lacks: it has the SDK's defaults) reaching moto through `endpoint`, a proxy.
    pub async fn aws_via(&self, endpoint: &str) -> Aws {
        let sdk = self
            .moto
            .sdk_config()
            .await
            .into_builder()
            .endpoint_url(endpoint)
            .build();
        Aws::paced(Aws::retrying(sdk), TABLE, Pacing::unlimited())
    }

    /// This harness's cluster access, but counting a cluster API slower than `timeout` as
    /// unreadable (the product's default is 30 s).
    pub fn connector_with_read_timeout(&self, timeout: std::time::Duration) -> ClusterConnector {
        ClusterConnector::new(
            ClusterAccess::Kubeconfig(vec![self.kubeconfig.clone()]),
            &self.aws.sdk,
            self.aws.calls.clone(),
        )
        .with_read_timeout(timeout)
    }

    /// Mutating AWS calls since the last reset, by operation.
    pub fn mutating_calls(&self) -> std::collections::BTreeMap<String, usize> {
        self.aws.calls.mutating()
    }

    pub fn pod_ips(&self) -> Vec<String> {
        self.kube
            .pods("default")
            .iter()
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect()
    }
}
