//! The seed 004 walkthrough's AWS side, created in moto: a VPC with two subnets, an ALB with its
//! security group, target groups for ip and instance targets, and two EC2 instances as nodes.

use aws_config::SdkConfig;
use aws_sdk_ec2::types::Filter;
use aws_sdk_elasticloadbalancingv2::types::{
    LoadBalancerTypeEnum, ProtocolEnum, Tag, TargetTypeEnum,
};
use std::collections::BTreeSet;

pub struct Instance {
    pub id: String,
    /// The primary network interface, where the VPC CNI puts pod IPs.
    pub eni: String,
    pub private_ip: String,
    pub zone: String,
}

pub struct World {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub vpc: String,
    pub subnets: Vec<String>,
    pub alb_security_group: String,
    pub load_balancer: String,
    pub instances: Vec<Instance>,
    placed: std::sync::Mutex<BTreeSet<String>>,
}

impl World {
    pub async fn create(sdk: &SdkConfig) -> World {
        let ec2 = aws_sdk_ec2::Client::new(sdk);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(sdk);
        let vpc = ec2
            .create_vpc()
            .cidr_block("192.168.0.0/16")
            .send()
            .await
            .expect("create VPC");
        let vpc = vpc
            .vpc()
            .and_then(|v| v.vpc_id())
            .expect("VPC id")
            .to_string();
        let mut subnets = Vec::new();
        for (cidr, zone) in [
            ("192.168.32.0/19", "us-west-2a"),
            ("192.168.64.0/19", "us-west-2b"),
        ] {
            let subnet = ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(cidr)
                .availability_zone(zone)
                .send()
                .await
                .expect("create subnet");
            subnets.push(
                subnet
                    .subnet()
                    .and_then(|s| s.subnet_id())
                    .expect("subnet id")
                    .to_string(),
            );
        }
        let group = ec2
            .create_security_group()
            .group_name("alb")
            .description("ALB of the seed 004 walkthrough")
            .vpc_id(&vpc)
            .send()
            .await
            .expect("create ALB security group");
        let alb_security_group = group.group_id().expect("group id").to_string();
        let lb = elb
            .create_load_balancer()
            .name("seed004-alb")
            .set_subnets(Some(subnets.clone()))
            .security_groups(&alb_security_group)
            .r#type(LoadBalancerTypeEnum::Application)
            .send()
            .await
            .expect("create ALB");
        let load_balancer = lb.load_balancers()[0]
            .load_balancer_arn()
            .expect("ALB ARN")
            .to_string();
        let mut instances = Vec::new();
        for (subnet, zone) in subnets.iter().zip(["us-west-2a", "us-west-2b"]) {
            let run = ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .min_count(1)
                .max_count(1)
                .subnet_id(subnet)
                // As EKS managed node groups tag their instances: instance events find their
                // cluster by it.
                .tag_specifications(
                    aws_sdk_ec2::types::TagSpecification::builder()
                        .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key("eks:cluster-name")
                                .value(super::harness::CLUSTER)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .expect("run instance");
            let instance = &run.instances()[0];
            instances.push(Instance {
                id: instance.instance_id().expect("instance id").to_string(),
                eni: instance.network_interfaces()[0]
                    .network_interface_id()
                    .expect("interface id")
                    .to_string(),
                private_ip: instance
                    .private_ip_address()
                    .expect("private IP")
                    .to_string(),
                zone: zone.to_string(),
            });
        }
        World {
            ec2,
            elb,
            vpc,
            subnets,
            alb_security_group,
            load_balancer,
            instances,
            placed: Default::default(),
        }
    }

    /// Creates a target group in the walkthrough's VPC and returns its ARN.
    pub async fn target_group(
        &self,
        name: &str,
        target_type: TargetTypeEnum,
        port: i32,
        tags: &[(&str, &str)],
    ) -> String {
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
            .collect();
        let created = self
            .elb
            .create_target_group()
            .name(name)
            .protocol(ProtocolEnum::Http)
            .port(port)
            .vpc_id(&self.vpc)
            .target_type(target_type)
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .expect("create target group");
        created.target_groups()[0]
            .target_group_arn()
            .expect("TG ARN")
            .to_string()
    }

    /// `count` rules of someone else's in `group`: TCP on ports 1000, 1002, … from
    /// 10.9.0.0/16.
    pub async fn add_foreign_rules(&self, group: &str, count: usize) {
        let rules = (0..count as i32).map(|i| {
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(1000 + 2 * i)
                .to_port(1000 + 2 * i)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("10.9.0.0/16")
                        .build(),
                )
                .build()
        });
        self.ec2
            .authorize_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(rules.collect()))
            .send()
            .await
            .expect("foreign rules");
    }

    /// The security groups of instance `i`'s primary interface (moto gives it the VPC's
    /// default group).
    pub async fn instance_groups(&self, i: usize) -> Vec<String> {
        let answer = self
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(&self.instances[i].eni)
            .send()
            .await
            .expect("describe interface");
        answer
            .network_interfaces()
            .iter()
            .flat_map(|eni| eni.groups())
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect()
    }

    /// `id:port` of every registered target.
    pub async fn targets(&self, target_group: &str) -> BTreeSet<String> {
        self.registered(target_group)
            .await
            .expect("describe target health")
    }

    /// `id:port` of every registered target; none when the target group is gone.
    pub async fn registered(
        &self,
        target_group: &str,
    ) -> Result<
        BTreeSet<String>,
        aws_sdk_elasticloadbalancingv2::error::SdkError<
            aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthError,
        >,
    >{
        let health = match self
            .elb
            .describe_target_health()
            .target_group_arn(target_group)
            .send()
            .await
        {
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_target_group_not_found_exception()) =>
            {
                return Ok(BTreeSet::new());
            }
            answer => answer?,
        };
        Ok(health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target())
            .map(|t| {
                format!(
                    "{}:{}",
                    t.id().unwrap_or_default(),
                    t.port().unwrap_or_default()
                )
            })
            .collect())
    }

    pub async fn register(&self, target_group: &str, id: &str, port: i32) {
        self.elb
            .register_targets()
            .target_group_arn(target_group)
            .targets(
                aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                    .id(id)
                    .port(port)
                    .build(),
            )
            .send()
            .await
            .expect("register by hand");
    }

    pub async fn deregister(&self, target_group: &str, id: &str, port: i32) {
        self.elb
            .deregister_targets()
            .target_group_arn(target_group)
            .targets(
                aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                    .id(id)
                    .port(port)
                    .build(),
            )
            .send()
            .await
            .expect("deregister by hand");
    }

    /// Whether the load balancer still exists (the reconciler must never touch it).
    pub async fn load_balancer_exists(&self) -> bool {
        self.elb
            .describe_load_balancers()
            .load_balancer_arns(&self.load_balancer)
            .send()
            .await
            .map(|a| !a.load_balancers().is_empty())
            .unwrap_or(false)
    }

    pub async fn target_group_exists(&self, arn: &str) -> bool {
        self.elb
            .describe_target_groups()
            .target_group_arns(arn)
            .send()
            .await
            .map(|a| !a.target_groups().is_empty())
            .unwrap_or(false)
    }

    /// Whether the VPC is there (used by the harness as a sanity check).
    pub async fn vpc_exists(&self) -> bool {
        self.ec2
            .describe_vpcs()
            .filters(Filter::builder().name("vpc-id").values(&self.vpc).build())
            .send()
            .await
            .map(|a| !a.vpcs().is_empty())
            .unwrap_or(false)
    }
}

impl World {
    /// The Kubernetes node name of instance `i`: `node-<i>`.
    pub fn node_name(i: usize) -> String {
        format!("node-{i}")
    }

    fn instance_of(&self, node: &str) -> Option<&Instance> {
        (0..self.instances.len())
            .find(|i| Self::node_name(*i) == node)
            .map(|i| &self.instances[i])
    }

    /// What the VPC CNI does: puts each pod's IP on its node's interface as a secondary
    /// address (hostNetwork pods already use the node's own). Idempotent.
    pub async fn place_pods(&self, pods: &[serde_json::Value]) {
        let placed = self.placed.lock().map(|p| p.clone()).unwrap_or_default();
        for pod in pods {
            let (Some(ip), Some(node)) = (
                pod["status"]["podIP"].as_str(),
                pod["spec"]["nodeName"].as_str(),
            ) else {
                continue;
            };
            let Some(instance) = self.instance_of(node) else {
                continue;
            };
            if ip == instance.private_ip || placed.contains(ip) {
                continue;
            }
            self.ec2
                .assign_private_ip_addresses()
                .network_interface_id(&instance.eni)
                .private_ip_addresses(ip)
                .send()
                .await
                .expect("assign a pod IP to its node");
            if let Ok(mut placed) = self.placed.lock() {
                placed.insert(ip.to_string());
            }
        }
    }
}
