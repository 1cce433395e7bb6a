//! The `TargetGroupBinding` spec parser: bytes → JSON → the resource's `spec` →
//! `binding_from_resource`, and for every binding it accepts, the pure checks a binding goes
//! through next (its label selector, and `resolve` against target groups of every kind).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::collections::BTreeMap;
use tgb_reconciler::model::aws::TargetGroupInfo;
use tgb_reconciler::model::cluster::BindingResource;
use tgb_reconciler::model::{IpFamily, TargetType};
use tgb_reconciler::pure::binding::resource::binding_from_resource;
use tgb_reconciler::pure::binding::{
    ALLOW_EMPTY_KEY, Binding, DERIVE_INGRESS_KEY, TargetGroupSelector, resolve,
};

fuzz_target!(|data: &[u8]| {
    // The API server serves `spec` as JSON; anything else never reaches the parser.
    let Ok(spec) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let resource = BindingResource {
        namespace: "default".into(),
        name: "web".into(),
        generation: Some(1),
        annotations: BTreeMap::from([
            (ALLOW_EMPTY_KEY.to_string(), "true".to_string()),
            (DERIVE_INGRESS_KEY.to_string(), "TRUE".to_string()),
        ]),
        spec,
    };
    match binding_from_resource(&resource) {
        // Every error names a field of the spec, so one bad resource fails alone and legibly.
        Err(error) => {
            assert!(
                error.field == "spec" || error.field.starts_with("spec."),
                "{error:?}"
            );
            assert!(!error.message.is_empty(), "{error:?}");
        }
        Ok(binding) => check(&binding),
    }
});

fn check(binding: &Binding) {
    let service = &binding.service;
    assert_eq!(service.namespace, "default");
    assert!(!service.name.is_empty() && service.name.trim() == service.name);
    assert!(service.port.validate().is_ok(), "{binding:?}");
    match &binding.target_group {
        TargetGroupSelector::Arn(arn) => {
            assert!(arn.starts_with("arn:") && arn.contains(":targetgroup/"))
        }
        TargetGroupSelector::Name(name) => {
            assert!(!name.is_empty() && name.trim() == name)
        }
    }
    assert!(binding.allow_empty && binding.derive_ingress);
    if let Some(selector) = &binding.node_selector {
        assert!(selector.validate().is_ok(), "{binding:?}");
        assert_ne!(binding.target_type, Some(TargetType::Ip));
        for labels in [
            BTreeMap::new(),
            selector.match_labels.clone(),
            BTreeMap::from([("zone".to_string(), "a".to_string())]),
        ] {
            let _ = selector.matches(&labels);
        }
    }
    if let Some(networking) = &binding.networking {
        for rule in &networking.ingress {
            assert!(!rule.from.is_empty(), "{binding:?}");
            for port in rule.ports.iter().filter_map(|p| p.port.as_ref()) {
                assert!(port.validate().is_ok(), "{binding:?}");
            }
        }
    }
    let _ = (
        binding.service.to_string(),
        binding.target_group.to_string(),
    );
    serde_json::to_string(binding).expect("a Binding always serializes");

    for (target_type, ip_family) in [
        (Some(TargetType::Ip), IpFamily::Ipv4),
        (Some(TargetType::Instance), IpFamily::Ipv4),
        (Some(TargetType::Ip), IpFamily::Ipv6),
        (None, IpFamily::Ipv4),
    ] {
        let target_group = target_group(target_type, ip_family);
        match resolve(binding, &target_group) {
            Ok(resolved) => {
                assert_eq!(Some(resolved.target_type), target_type);
                assert!(
                    binding
                        .target_type
                        .is_none_or(|t| t == resolved.target_type)
                );
                assert!(binding.ip_family.is_none_or(|f| f == ip_family));
                if resolved.target_type == TargetType::Instance {
                    assert!(binding.assume_role.is_none(), "{binding:?}");
                }
                serde_json::to_string(&resolved).expect("a ResolvedBinding always serializes");
            }
            Err(error) => assert!(!error.message.is_empty(), "{error:?}"),
        }
    }
}

fn target_group(target_type: Option<TargetType>, ip_family: IpFamily) -> TargetGroupInfo {
    TargetGroupInfo {
        arn: "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/0123456789abcdef"
            .into(),
        name: "web".into(),
        target_type,
        raw_target_type: target_type.map_or("lambda".into(), |t| t.to_string()),
        ip_family,
        vpc_id: Some("vpc-0123456789abcdef0".into()),
        protocol: Some("HTTP".into()),
        port: Some(80),
        load_balancer_arns: vec![
            "arn:aws:elasticloadbalancing:us-west-2:123456789012:loadbalancer/app/web/1".into(),
        ],
        tags: BTreeMap::new(),
        health_check_protocol: Some("HTTP".into()),
        health_check_port: Some("traffic-port".into()),
    }
}
