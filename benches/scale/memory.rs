//! The planning benchmark's world, served from memory by the crate's in-memory ports
//! ([`MemoryCloud`]), so it measures the product's decisions (resolve → desire → rules → plan →
//! apply's bookkeeping) and no I/O. Writes change that state the way AWS would, so a second
//! run finds everything converged.

use super::layout::{Kind, Layout};
use tgb_reconciler::model::TargetType;
use tgb_reconciler::model::network::Eni;
use tgb_reconciler::testing::{MemoryCloud, target_group};

pub const VPC: &str = "vpc-bench";
/// The VPC's CIDR: the node subnets and the pod IPs are inside it.
const VPC_CIDR: &str = "192.168.0.0/16";

/// Made-up cloud ids for a layout that lives in memory only.
pub fn layout(scale: super::layout::Scale) -> Layout {
    let nodes = (0..scale.nodes())
        .map(|n| super::layout::NodeIds {
            instance: format!("i-{n:017x}"),
            eni: format!("eni-{n:017x}"),
            ip: format!("192.168.{}.{}", 32 + n / 250, 1 + n % 250),
            security_group: format!("sg-{n:017x}"),
        })
        .collect();
    let target_groups = (0..scale.bindings())
        .map(|b| {
            format!(
                "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/b-{b:04}/{b:016x}"
            )
        })
        .collect();
    Layout {
        scale,
        nodes,
        target_groups,
        alb_security_group: "sg-0a1b000000000a1b0".into(),
    }
}

/// A cloud holding the layout's target groups (in [`VPC`]), its nodes' instances (each
/// primary interface in the node's own group, holding the node's IP and its pods' IPs), those
/// groups and the ALB's, and the snapshot the cluster would give.
pub fn cloud(layout: &Layout) -> MemoryCloud {
    let vpc = VPC_CIDR.parse().into_iter().collect();
    // The benchmark counts the product's allocations, not a log of its calls.
    let mut cloud = MemoryCloud::new()
        .without_call_log()
        .with_snapshot(layout.snapshot())
        .with_vpc(VPC, vpc)
        .with_security_group(&layout.alb_security_group);
    for (b, arn) in layout.target_groups.iter().enumerate() {
        let kind = match layout.kind(b) {
            Kind::Instance => TargetType::Instance,
            Kind::Ip => TargetType::Ip,
        };
        let mut info = target_group(arn, kind);
        info.name = Layout::binding_name(b);
        info.vpc_id = Some(VPC.into());
        cloud = cloud.with_target_group(info);
    }
    for (n, node) in layout.nodes.iter().enumerate() {
        let eni = Eni {
            id: node.eni.clone(),
            groups: vec![node.security_group.as_str().into()],
        };
        let ips = layout.pod_ips_on(n).into_iter().chain([node.ip.clone()]);
        cloud = cloud
            .with_security_group(&node.security_group)
            .with_instance(&node.instance, eni, ips.collect());
    }
    cloud
}
