//! Every sample payload in `events/` is realistic and classifies as expected, so none can rot.

use aws_lambda_events::cloudwatch_events::cloudtrail::AWSAPICall;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use std::collections::BTreeMap;
use tgb_reconciler::pure::trigger::{Trigger, classify};

const OWN_ROLE: &str = "arn:aws:iam::123456789012:role/tgb-reconciler";

/// The kind each sample must classify to (a new sample needs a line here).
fn expected() -> BTreeMap<&'static str, &'static str> {
    [
        ("scheduled-sweep.json", "sweep"),
        ("scheduler-sweep.json", "sweep"),
        ("scheduler-sweep-one-cluster.json", "sweep"),
        (
            "cloudtrail-authorize-security-group-ingress.json",
            "security-group",
        ),
        (
            "cloudtrail-revoke-security-group-ingress.json",
            "security-group",
        ),
        (
            "cloudtrail-modify-security-group-rules.json",
            "security-group",
        ),
        ("cloudtrail-delete-security-group.json", "security-group"),
        (
            "cloudtrail-modify-network-interface-attribute.json",
            "network-interface",
        ),
        ("cloudtrail-register-targets.json", "target-group"),
        ("cloudtrail-deregister-targets.json", "target-group"),
        ("cloudtrail-delete-target-group.json", "target-group"),
        ("ec2-instance-terminated.json", "instance"),
        ("cloudtrail-own-role-authorize.json", "ignored"),
        ("cloudtrail-error-code-revoke.json", "ignored"),
    ]
    .into()
}

#[test]
fn every_sample_event_parses_and_classifies_as_expected() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/events");
    let expected = expected();
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir}: {e}")) {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name")
            .to_string();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        // Scheduler payloads (`{}`, `{"sweep-cluster": …}`) are not EventBridge envelopes.
        if value.get("detail-type").is_some() {
            let envelope: EventBridgeEvent<serde_json::Value> =
                serde_json::from_value(value.clone())
                    .unwrap_or_else(|e| panic!("{name} is not an EventBridge event: {e}"));
            if envelope.detail_type == "AWS API Call via CloudTrail" {
                let _: AWSAPICall = serde_json::from_value(envelope.detail.clone())
                    .unwrap_or_else(|e| panic!("{name}'s detail is not a CloudTrail record: {e}"));
            }
        }
        let trigger = classify(&value, Some(OWN_ROLE));
        let kind = serde_json::to_value(&trigger).expect("serializable")["kind"]
            .as_str()
            .expect("kind")
            .to_string();
        let want = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} has no expected kind in tests/events.rs"));
        assert_eq!(&kind, want, "{name}: {trigger:?}");
        if let Trigger::Ignored { reason } = &trigger {
            assert!(!reason.is_empty(), "{name}");
        }
        seen.push(name);
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "every expected sample exists: {seen:?}"
    );
}
