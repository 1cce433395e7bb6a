//! The seed documents' manifests are accepted unchanged.

use std::collections::BTreeMap;
use tgb_reconciler::model::cluster::BindingResource;
use tgb_reconciler::pure::binding::networking::NetworkingSpec;
use tgb_reconciler::pure::binding::resource::binding_from_resource;

const ARN: &str =
    "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/tg/0123456789abcdef";

/// A seed manifest as YAML, with its `<…>` placeholders filled with real-looking ids or not.
fn read(name: &str, fill_placeholders: bool) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/manifests/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    if fill_placeholders {
        for placeholder in ["<TG_IP_ARN>", "<TG_INSTANCE_ARN>", "<TG_ARN>"] {
            text = text.replace(placeholder, ARN);
        }
        text = text.replace("<ALB_SG_ID>", "sg-0123456789abcdef0");
    }
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn resource(document: &serde_json::Value) -> BindingResource {
    BindingResource {
        namespace: "default".into(),
        name: document["metadata"]["name"].as_str().expect("name").into(),
        generation: Some(1),
        annotations: BTreeMap::new(),
        spec: document["spec"].clone(),
    }
}

#[test]
fn every_seed_target_group_binding_validates_unchanged() {
    for name in [
        "seed004-tgb-alb-ip.yaml",
        "seed004-tgb-alb-instance.yaml",
        "seed004-tgb-nlb-ip.yaml",
    ] {
        let binding = binding_from_resource(&resource(&read(name, true)))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(binding.networking.is_some(), "{name}: networking parsed");
        // With its placeholders left in, the first one met is named.
        let error = binding_from_resource(&resource(&read(name, false))).expect_err(name);
        assert_eq!(error.field, "spec.targetGroupARN", "{name}: {error}");
    }
}

#[test]
fn the_seed_003_networking_section_validates_unchanged() {
    let document = read("seed003-networking-udp.yaml", false);
    let spec: NetworkingSpec =
        serde_json::from_value(document["networking"].clone()).expect("shape");
    let networking = spec.validate("spec.networking").expect("valid");
    assert_eq!(networking.ingress[0].ports.len(), 1);
}
