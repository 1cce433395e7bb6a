//! Test fixtures: a plain binding and its resolution, for the pure stages' tables.

use super::{Binding, PortRef, ResolvedBinding, ServiceRef, TargetGroupSelector};
use crate::model::{BindingId, IpFamily, TargetGroupRef, TargetType};

/// `TargetGroupBinding default/<name>` for Service `default/<name>` port 80, nothing else set.
pub fn binding(name: &str, arn: &str) -> Binding {
    Binding {
        id: BindingId::resource("default", name),
        generation: Some(1),
        target_group: TargetGroupSelector::Arn(arn.into()),
        target_type: None,
        service: ServiceRef {
            namespace: "default".into(),
            name: name.into(),
            port: PortRef::Number(80),
        },
        node_selector: None,
        ip_family: None,
        vpc_id: None,
        multi_cluster: false,
        assume_role: None,
        networking: None,
        allow_empty: false,
        derive_ingress: false,
    }
}

/// `binding` resolved against an IPv4 target group of `target_type` in `vpc-1`.
pub fn resolved(binding: Binding, target_type: TargetType) -> ResolvedBinding {
    let arn = match &binding.target_group {
        TargetGroupSelector::Arn(arn) => arn.clone(),
        TargetGroupSelector::Name(name) => name.as_str().into(),
    };
    ResolvedBinding {
        target_group: TargetGroupRef::new(&arn),
        target_group_name: arn.name().unwrap_or("tg").into(),
        target_type,
        ip_family: IpFamily::Ipv4,
        vpc_id: Some("vpc-1".into()),
        traffic: Default::default(),
        binding,
    }
}
