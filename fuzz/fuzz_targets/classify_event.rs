//! The event classifier, fed what the Lambda handler is fed: the runtime parses the raw
//! invocation payload as JSON (`LambdaEvent<serde_json::Value>`) and `handle_event` classifies
//! it before anything else, with or without the reconciler's own role ARN.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tgb_reconciler::entry::lambda::HandledEvent;
use tgb_reconciler::pure::trigger::{SWEEP_CLUSTER_KEY, Trigger, classify};

const OWN_ROLE: &str = "arn:aws:iam::123456789012:role/tgb-reconciler";
const ISSUER: &str = "/detail/userIdentity/sessionContext/sessionIssuer/arn";

fuzz_target!(|data: &[u8]| {
    // A payload that is not JSON never reaches the handler: the runtime refuses it.
    let Ok(event) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let without_role = classify(&event, None);
    let with_role = classify(&event, Some(OWN_ROLE));
    check(&without_role);
    check(&with_role);
    // Knowing the own role can only turn an event into Ignored, never retarget it.
    if with_role != without_role {
        assert!(
            matches!(with_role, Trigger::Ignored { .. }),
            "{with_role:?} vs {without_role:?}"
        );
    }
    // A CloudTrail event made by the own role never triggers a run.
    if let Some(issuer) = event.pointer(ISSUER).and_then(Value::as_str) {
        let own = classify(&event, Some(issuer));
        check(&own);
        let is_cloudtrail = event.get(SWEEP_CLUSTER_KEY).is_none()
            && event.get("source").is_some_and(Value::is_string)
            && event.get("detail-type").and_then(Value::as_str)
                == Some("AWS API Call via CloudTrail");
        if is_cloudtrail {
            assert!(matches!(own, Trigger::Ignored { .. }), "{own:?}");
        }
    }
    event_age(&event);
});

/// What holds for every classification by `classify`'s contract.
fn check(trigger: &Trigger) {
    match trigger {
        Trigger::Ignored { reason } | Trigger::Sweep { reason, .. } => {
            assert!(!reason.trim().is_empty(), "{trigger:?} has no reason");
        }
        Trigger::SecurityGroup { event, .. }
        | Trigger::NetworkInterface { event, .. }
        | Trigger::TargetGroup { event, .. } => {
            assert!(!event.is_empty(), "{trigger:?} names no event");
        }
        Trigger::Instance { .. } => {}
    }
    if let Trigger::Sweep {
        cluster: Some(cluster),
        ..
    } = trigger
    {
        assert!(
            !cluster.is_empty() && cluster.trim() == cluster,
            "{trigger:?}"
        );
    }
    // The invocation's answer carries the trigger: serializing it must not fail.
    let json = serde_json::to_value(trigger).expect("a Trigger always serializes");
    assert!(json.get("kind").is_some_and(Value::is_string), "{json}");
    let handled = HandledEvent {
        trigger: trigger.clone(),
        outcomes: Vec::new(),
    };
    assert!(!handled.describe_trigger().is_empty());
    serde_json::to_string(&handled.to_json(true)).expect("the answer always serializes");
}

/// Mirrors `report_invocation` (private in src/lambda.rs): the event's age from its `time`.
fn event_age(event: &Value) {
    if let Some(time) = event.get("time").and_then(Value::as_str)
        && let Ok(at) = aws_smithy_types::DateTime::from_str(
            time,
            aws_smithy_types::date_time::Format::DateTime,
        )
    {
        let _ = at.to_millis().ok().and_then(|ms| u64::try_from(ms).ok());
    }
}
