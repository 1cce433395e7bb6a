//! Several clusters of one deployment in one AWS account: one moto, reached through a
//! [`RateMeter`] that notes every call, and per cluster its nodes (each an instance in a
//! security group of its own), its Kubernetes test API server and its TargetGroupBindings:
//! instance targets on a NodePort, each binding with a target group of its own and admitting
//! the ALB's group on its port. Each cluster is swept by a process of its own — its own
//! clients, its own pacing — and all at once, as the template's per-cluster schedules start
//! them.

use super::harness::TABLE;
use super::kube_api::{KubeApi, NodeFixture};
use super::moto::{Moto, sdk_config_at};
use super::rate_meter::RateMeter;
use super::world::World;
use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use serde_json::{Value, json};
use std::path::PathBuf;
use tgb_reconciler::adapters::Aws;
use tgb_reconciler::adapters::eks::{ClusterAccess, ClusterConnector};
use tgb_reconciler::adapters::pacing::{Pacing, Peers};
use tgb_reconciler::pure::outcome::ClusterOutcome;
use tgb_reconciler::pure::scope::Scope;
use tgb_reconciler::shell::cluster_run::RunOptions;
use tgb_reconciler::shell::session::{Session, reconcile_clusters};
use tgb_reconciler::state::lease::LeaseTerms;

/// How many clusters, and what each holds.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub clusters: usize,
    /// Nodes per cluster, each in a security group of its own: a rule write each on a first
    /// sweep.
    pub nodes: usize,
    /// Bindings per cluster, each with a target group of its own: a target-health read each
    /// per pass.
    pub bindings: usize,
}

impl Shape {
    pub fn describe(&self) -> String {
        format!(
            "{} clusters, each with {} bindings (instance targets, a target group each) on {} nodes (a security group each)",
            self.clusters, self.bindings, self.nodes
        )
    }
}

/// How the clusters' processes pace themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As deployed: the share divided among the processes on the state table's roster.
    Together,
    /// As before the roster: each process takes the whole share for itself.
    EachAlone,
}

struct Member {
    name: String,
    kube: KubeApi,
    kubeconfig: PathBuf,
}

pub struct Fleet {
    pub meter: RateMeter,
    members: Vec<Member>,
    _dir: tempfile::TempDir,
    /// Kept running for as long as the fleet.
    _moto: Moto,
}

impl Fleet {
    pub async fn start(shape: Shape) -> Fleet {
        let moto = Moto::start();
        let sdk = moto.sdk_config().await;
        let world = World::create(&sdk).await;
        let setup = Aws::paced(sdk.clone(), TABLE, Pacing::unlimited());
        setup
            .store
            .create_table()
            .await
            .expect("create the state table");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut members = Vec::with_capacity(shape.clusters);
        for c in 0..shape.clusters {
            let name = format!("fleet-{c}");
            let kube = KubeApi::start().await;
            for n in 0..shape.nodes {
                let (instance, zone, ip) = launch_node(&world, &format!("{name}-n{n}"), n).await;
                kube.add_node(NodeFixture::new(&format!("node-{n}"), &instance, zone, &ip));
            }
            let mut items = Vec::new();
            for b in 0..shape.bindings {
                let target_group = world
                    .target_group(&format!("{name}-b{b}"), TargetTypeEnum::Instance, 80, &[])
                    .await;
                let port = 30_000 + 100 * c + b;
                items.extend(binding(b, port, &target_group, &world.alb_security_group));
            }
            kube.apply(json!({"apiVersion": "v1", "kind": "List", "items": items}));
            let kubeconfig = dir.path().join(format!("{name}.kubeconfig"));
            kube.write_kubeconfig(&kubeconfig, &name);
            members.push(Member {
                name,
                kube,
                kubeconfig,
            });
        }
        let meter = RateMeter::start(&moto.url).await;
        Fleet {
            meter,
            members,
            _dir: dir,
            _moto: moto,
        }
    }

    /// Sweeps every cluster at once, each in a process of its own reaching AWS through the
    /// meter, at `share` of each bucket: divided among them, or each alone. The meter counts
    /// from the start. Each process leaves the roster when its sweep ends, as an invocation
    /// does. Every cluster's outcomes, in order.
    pub async fn sweep_at_once(&self, share: f64, pace: Pace) -> Vec<Vec<ClusterOutcome>> {
        let sdk = Aws::retrying(sdk_config_at(&self.meter.url).await);
        let processes: Vec<Aws> = self
            .members
            .iter()
            .map(|_| {
                let pacing = Pacing::with_share(share).expect("a share in (0, 1]");
                let pacing = match pace {
                    Pace::Together => pacing.among(Peers {
                        origin: "lambda".into(),
                        clusters: self.members.len(),
                        check_in: true,
                    }),
                    Pace::EachAlone => pacing,
                };
                Aws::paced(sdk.clone(), TABLE, pacing)
            })
            .collect();
        self.meter.reset();
        let sweeps = self
            .members
            .iter()
            .zip(&processes)
            .map(|(member, aws)| async move {
                let session = Session {
                    aws,
                    connector: ClusterConnector::new(
                        ClusterAccess::Kubeconfig(vec![member.kubeconfig.clone()]),
                        &aws.sdk,
                        aws.calls.clone(),
                    ),
                    clusters: vec![member.name.clone()],
                    policy: Default::default(),
                    options: RunOptions {
                        dry_run: false,
                        lease: Some(LeaseTerms::new("lambda", 900)),
                        deadline: None,
                    },
                };
                let outcomes =
                    reconcile_clusters(&session, &[(member.name.clone(), Scope::Cluster)]).await;
                aws.pacing.leave().await;
                outcomes
            });
        futures::future::join_all(sweeps).await
    }
}

/// A node: an instance in a security group of its own, in the world's subnets by turn. Its
/// instance id, zone and private address.
async fn launch_node(world: &World, name: &str, n: usize) -> (String, &'static str, String) {
    let group = world
        .ec2
        .create_security_group()
        .group_name(name)
        .description("a node of a fleet cluster")
        .vpc_id(&world.vpc)
        .send()
        .await
        .expect("create a node group");
    let zones = ["us-west-2a", "us-west-2b"];
    let run = world
        .ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .subnet_id(&world.subnets[n % world.subnets.len()])
        .security_group_ids(group.group_id().expect("group id"))
        .send()
        .await
        .expect("launch a node");
    let instance = &run.instances()[0];
    (
        instance.instance_id().expect("instance id").to_string(),
        zones[n % zones.len()],
        instance
            .private_ip_address()
            .expect("private IP")
            .to_string(),
    )
}

/// Binding `b`: its TargetGroupBinding (instance targets on the NodePort, admitting the ALB's
/// group on it) and its Service.
fn binding(b: usize, port: usize, target_group: &str, alb_group: &str) -> [Value; 2] {
    let (name, service) = (format!("b-{b}"), format!("svc-{b}"));
    [
        json!({
            "apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
            "metadata": {"name": name, "namespace": "default", "generation": 1},
            "spec": {
                "serviceRef": {"name": service, "port": 80},
                "targetGroupARN": target_group,
                "targetType": "instance",
                "networking": {"ingress": [{
                    "from": [{"securityGroup": {"groupID": alb_group}}],
                    "ports": [{"protocol": "TCP", "port": port}],
                }]},
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service, "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": port}
            ]},
        }),
    ]
}
