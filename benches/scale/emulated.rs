//! A benchmark cluster on the local emulators: its AWS side in moto, its Kubernetes side in the
//! test API server, and the product's real adapters wired to both, counting their calls.

use super::layout::{GROUP_LABEL, Kind, Layout, NodeIds, Scale};
use crate::support::kube_api::{KubeApi, NodeFixture};
use crate::support::moto::Moto;
use crate::support::world::World;
use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tgb_reconciler::adapters::Aws;
use tgb_reconciler::adapters::eks::{ClusterAccess, ClusterConnector};
use tgb_reconciler::pure::outcome::ClusterOutcome;
use tgb_reconciler::pure::scope::Scope;
use tgb_reconciler::shell::cluster_run::RunOptions;
use tgb_reconciler::shell::session::{Session, reconcile_clusters};
use tgb_reconciler::state::lease::LeaseTerms;

pub const CLUSTER: &str = "bench";
pub const TABLE: &str = "tgb-bench";

pub struct Emulated {
    pub layout: Layout,
    pub aws: Aws,
    pub kube: KubeApi,
    pub kubeconfig: PathBuf,
    pub moto: Moto,
    _dir: tempfile::TempDir,
}

impl Emulated {
    pub async fn start(scale: Scale) -> Emulated {
        let moto = Moto::start();
        let sdk = moto.sdk_config().await;
        // The walkthrough world gives the VPC, its two subnets and the ALB's group; its own
        // two instances are not nodes of this cluster.
        let world = World::create(&sdk).await;
        let nodes = launch_nodes(&world, &sdk, scale).await;
        let mut target_groups = Vec::with_capacity(scale.bindings());
        let mut layout = Layout {
            scale,
            nodes,
            target_groups: Vec::new(),
            alb_security_group: world.alb_security_group.clone(),
        };
        for b in 0..scale.bindings() {
            let kind = match layout.kind(b) {
                Kind::Instance => TargetTypeEnum::Instance,
                Kind::Ip => TargetTypeEnum::Ip,
            };
            target_groups.push(
                world
                    .target_group(&Layout::binding_name(b), kind, 80, &[])
                    .await,
            );
        }
        layout.target_groups = target_groups;
        for (n, node) in layout.nodes.iter().enumerate() {
            let ips = layout.pod_ips_on(n);
            if !ips.is_empty() {
                world
                    .ec2
                    .assign_private_ip_addresses()
                    .network_interface_id(&node.eni)
                    .set_private_ip_addresses(Some(ips))
                    .send()
                    .await
                    .expect("put the pod IPs on their node's interface");
            }
        }

        let aws = Aws::new(Aws::retrying(sdk), TABLE);
        aws.store
            .create_table()
            .await
            .expect("create the state table");
        let kube = KubeApi::start().await;
        for (n, node) in layout.nodes.iter().enumerate() {
            kube.add_node(
                NodeFixture::new(
                    &Layout::node_name(n),
                    &node.instance,
                    Layout::zone(n),
                    &node.ip,
                )
                .with_label(GROUP_LABEL, &format!("g{}", n / scale.nodes_per_group)),
            );
        }
        kube.apply(layout.cluster_objects());
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig, CLUSTER);
        Emulated {
            layout,
            aws,
            kube,
            kubeconfig,
            moto,
            _dir: dir,
        }
    }

    pub fn session(&self) -> Session<'_> {
        Session {
            aws: &self.aws,
            connector: ClusterConnector::new(
                ClusterAccess::Kubeconfig(vec![self.kubeconfig.clone()]),
                &self.aws.sdk,
                self.aws.calls.clone(),
            ),
            clusters: vec![CLUSTER.into()],
            policy: Default::default(),
            options: RunOptions {
                dry_run: false,
                lease: Some(LeaseTerms::new("bench", 900)),
                deadline: None,
            },
        }
    }

    pub async fn sweep(&self) -> Vec<ClusterOutcome> {
        reconcile_clusters(&self.session(), &[(CLUSTER.into(), Scope::Cluster)]).await
    }

    /// Forgets the calls counted so far, on both sides.
    pub fn reset_counts(&self) {
        self.aws.calls.reset();
        self.kube.clear_requests();
    }

    /// Calls since the last reset: AWS by `Service.Operation`, Kubernetes by `GET <kind>`.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = self.aws.calls.snapshot();
        for request in self.kube.requests() {
            *counts.entry(kube_operation(&request)).or_default() += 1;
        }
        counts
    }

    /// The environment the product's binary needs to reach this world.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.moto.env();
        env.push(("TGB_CLUSTERS", CLUSTER.into()));
        env.push(("TGB_TABLE", TABLE.into()));
        env.push(("KUBECONFIG", self.kubeconfig.display().to_string()));
        env
    }
}

/// `Kubernetes.GET nodes` for `GET /api/v1/nodes?limit=500`.
fn kube_operation(request: &str) -> String {
    let mut words = request.split_whitespace();
    let method = words.next().unwrap_or("?");
    let path = words.next().unwrap_or("?");
    let path = path.split('?').next().unwrap_or(path);
    let kind = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path);
    format!("Kubernetes.{method} {kind}")
}

/// The nodes, alternating between the two subnets, each launched into a security group of
/// its own (the only group on its interface).
async fn launch_nodes(world: &World, sdk: &aws_config::SdkConfig, scale: Scale) -> Vec<NodeIds> {
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let mut nodes = Vec::with_capacity(scale.nodes());
    for n in 0..scale.nodes() {
        let group = ec2
            .create_security_group()
            .group_name(Layout::node_name(n))
            .description("a benchmark node")
            .vpc_id(&world.vpc)
            .send()
            .await
            .expect("create a node group");
        let security_group = group.group_id().expect("group id").to_string();
        let run = ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .subnet_id(&world.subnets[n % world.subnets.len()])
            .security_group_ids(&security_group)
            .send()
            .await
            .expect("launch a node");
        let instance = &run.instances()[0];
        nodes.push(NodeIds {
            instance: instance.instance_id().expect("instance id").to_string(),
            eni: instance.network_interfaces()[0]
                .network_interface_id()
                .expect("interface id")
                .to_string(),
            ip: instance
                .private_ip_address()
                .expect("private IP")
                .to_string(),
            security_group,
        });
    }
    nodes
}
