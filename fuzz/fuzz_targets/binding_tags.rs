//! The target-group tags parser: bytes as tags, one `key=value` a line (split at the first
//! `=`; the reconciler's keys hold none), → `binding_from_tags` for every cluster they name
//! and one they do not, on ip, instance and unbindable target groups.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use tgb_reconciler::model::aws::TargetGroupInfo;
use tgb_reconciler::model::{BindingId, IpFamily, TargetType};
use tgb_reconciler::pure::binding::tags::{binding_from_tags, tagged_clusters};
use tgb_reconciler::pure::binding::{TargetGroupSelector, resolve};

const ARN: &str = "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/1";

fuzz_target!(|data: &[u8]| {
    // Tag values are UTF-8 strings: AWS cannot hand over anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tags: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    for target_type in [Some(TargetType::Ip), Some(TargetType::Instance), None] {
        let target_group = TargetGroupInfo {
            arn: ARN.into(),
            name: "web".into(),
            target_type,
            raw_target_type: target_type.map_or("lambda".into(), |t| t.to_string()),
            ip_family: IpFamily::Ipv4,
            vpc_id: Some("vpc-0123456789abcdef0".into()),
            protocol: Some("TCP".into()),
            port: Some(80),
            load_balancer_arns: vec![],
            tags: tags.clone(),
            health_check_protocol: None,
            health_check_port: None,
        };
        let clusters = tagged_clusters(&target_group);
        // A few of the named clusters are enough: each call splits the tag again, so all of a
        // long list would make an input quadratic and the target slow (AWS caps a value at 256).
        let some = clusters.iter().copied().take(4);
        for cluster in some.chain(["not-named-by-any-tag"]) {
            let named = clusters.contains(&cluster);
            match binding_from_tags(&target_group, cluster) {
                None => assert!(!named, "{cluster:?} is tagged but got no binding"),
                Some(_) if !named => panic!("{cluster:?} is not tagged but got a binding"),
                Some(Err(error)) => assert!(!error.message.is_empty(), "{error:?}"),
                Some(Ok(binding)) => {
                    assert_eq!(binding.id, BindingId::tags("web"));
                    assert_eq!(binding.target_group, TargetGroupSelector::Arn(ARN.into()));
                    assert!(binding.multi_cluster || clusters.len() == 1);
                    let service = &binding.service;
                    assert!(!service.namespace.is_empty() && !service.name.is_empty());
                    assert!(!service.name.contains('/'), "{binding:?}");
                    assert!(service.port.validate().is_ok(), "{binding:?}");
                    if binding.node_selector.is_some() {
                        assert_ne!(target_type, Some(TargetType::Ip));
                    }
                    serde_json::to_string(&binding).expect("a Binding always serializes");
                    let _ = resolve(&binding, &target_group);
                }
            }
        }
    }
});
