//! trigger: what an invocation is about. Turns any EventBridge envelope into a [`Trigger`]
//! (pure; only keys are extracted, live state is always re-read). Anything unknown, malformed,
//! failed or caused by the reconciler itself is [`Trigger::Ignored`] with the reason.

use crate::model::{SecurityGroupId, TargetGroupArn};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Trigger {
    /// Every binding of every configured cluster, or of the one named (a per-cluster
    /// schedule: sweeps fan out as one invocation per cluster).
    Sweep {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cluster: Option<String>,
    },
    /// Someone changed a security group's rules (or deleted the group).
    SecurityGroup {
        group: SecurityGroupId,
        event: String,
    },
    /// Someone changed the groups of a network interface.
    NetworkInterface {
        interface: String,
        event: String,
    },
    /// Someone changed a target group's targets or settings.
    TargetGroup {
        arn: TargetGroupArn,
        event: String,
    },
    /// An instance changed state (nodes come and go).
    Instance {
        instance: String,
        state: String,
    },
    Ignored {
        reason: String,
    },
}

/// The key of a per-cluster sweep payload: `{"sweep-cluster": "prod"}`.
pub const SWEEP_CLUSTER_KEY: &str = "sweep-cluster";

/// With a per-cluster sweep: watch the cluster afterwards for this long (the schedule's
/// period), then hand over to the next invocation. Minutes (the template's schedule) or
/// seconds.
pub const WATCH_MINUTES_KEY: &str = "watch-minutes";
pub const WATCH_SECONDS_KEY: &str = "watch-seconds";
/// The longest watch an invocation may be asked for: Lambda's longest timeout.
const LONGEST_WATCH_SECONDS: u64 = 900;

/// How long a per-cluster sweep payload asks the invocation to watch afterwards: `None` when
/// it does not ask, an error naming the key when its value is not a whole number of minutes or
/// seconds from 1 up to 15 minutes.
pub fn watch_period(event: &Value) -> Result<Option<std::time::Duration>, String> {
    let Some(envelope) = event
        .as_object()
        .filter(|e| e.contains_key(SWEEP_CLUSTER_KEY))
    else {
        return Ok(None);
    };
    let asked = [(WATCH_MINUTES_KEY, 60), (WATCH_SECONDS_KEY, 1)]
        .into_iter()
        .find_map(|(key, unit)| envelope.get(key).map(|value| (key, unit, value)));
    let Some((key, unit, value)) = asked else {
        return Ok(None);
    };
    match value.as_u64().and_then(|n| n.checked_mul(unit)) {
        Some(seconds) if (1..=LONGEST_WATCH_SECONDS).contains(&seconds) => {
            Ok(Some(std::time::Duration::from_secs(seconds)))
        }
        _ => Err(format!(
            "{key} must be a whole number from 1 up to {LONGEST_WATCH_SECONDS} seconds, not {value}"
        )),
    }
}

const EC2_RULE_EVENTS: &[&str] = &[
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
    "ModifySecurityGroupRules",
    "UpdateSecurityGroupRuleDescriptionsIngress",
    "DeleteSecurityGroup",
];
const ELB_EVENTS: &[&str] = &[
    "RegisterTargets",
    "DeregisterTargets",
    "ModifyTargetGroup",
    "DeleteTargetGroup",
];

/// Classifies one invocation payload. `own_role` is the reconciler's role ARN: its own calls
/// come back as CloudTrail events and must not trigger another run.
pub fn classify(event: &Value, own_role: Option<&str>) -> Trigger {
    let ignored = |reason: String| Trigger::Ignored { reason };
    let Some(envelope) = event.as_object() else {
        return ignored("the payload is not a JSON object".into());
    };
    // EventBridge Scheduler's default target input is an empty object.
    if envelope.is_empty() {
        return Trigger::Sweep {
            reason: "scheduled (EventBridge Scheduler)".into(),
            cluster: None,
        };
    }
    // A per-cluster schedule (template.yaml) names its cluster.
    if let Some(cluster) = envelope.get(SWEEP_CLUSTER_KEY) {
        return match cluster.as_str().filter(|c| !c.trim().is_empty()) {
            Some(cluster) => Trigger::Sweep {
                reason: "scheduled for one cluster (EventBridge Scheduler)".into(),
                cluster: Some(cluster.trim().to_string()),
            },
            None => ignored(format!("{SWEEP_CLUSTER_KEY} must be a cluster name")),
        };
    }
    let text = |v: &Value, path: &[&str]| -> Option<String> {
        path.iter()
            .try_fold(v, |v, key| v.get(*key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (Some(detail_type), Some(source)) =
        (text(event, &["detail-type"]), text(event, &["source"]))
    else {
        return ignored("not an EventBridge event: detail-type or source is missing".into());
    };
    let detail = event.get("detail").cloned().unwrap_or(Value::Null);
    match detail_type.as_str() {
        "Scheduled Event" => Trigger::Sweep {
            reason: format!("scheduled ({source})"),
            cluster: None,
        },
        "EC2 Instance State-change Notification" => {
            match (text(&detail, &["instance-id"]), text(&detail, &["state"])) {
                (Some(instance), Some(state)) => Trigger::Instance { instance, state },
                _ => ignored(
                    "instance state change without detail.instance-id or detail.state".into(),
                ),
            }
        }
        "AWS API Call via CloudTrail" => {
            if let Some(code) = text(&detail, &["errorCode"]) {
                return ignored(format!("the call failed ({code}); nothing changed"));
            }
            let issuer = text(
                &detail,
                &["userIdentity", "sessionContext", "sessionIssuer", "arn"],
            );
            if own_role.is_some() && issuer.as_deref() == own_role {
                return ignored("made by the reconciler's own role".into());
            }
            let Some(name) = text(&detail, &["eventName"]) else {
                return ignored("CloudTrail event without detail.eventName".into());
            };
            let request = detail
                .get("requestParameters")
                .cloned()
                .unwrap_or(Value::Null);
            let missing = |key: &str| ignored(format!("{name} without {key}"));
            match text(&detail, &["eventSource"]).as_deref() {
                Some("ec2.amazonaws.com") if EC2_RULE_EVENTS.contains(&name.as_str()) => {
                    // The response names the group even when the request used its name.
                    let from_response = detail
                        .pointer("/responseElements/securityGroupRuleSet/items/0/groupId")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let group = from_response
                        .or_else(|| text(&request, &["groupId"]))
                        .or_else(|| {
                            text(&request, &["ModifySecurityGroupRulesRequest", "GroupId"])
                        });
                    match group {
                        Some(group) => Trigger::SecurityGroup {
                            group: group.into(),
                            event: name,
                        },
                        None => missing("a group id"),
                    }
                }
                Some("ec2.amazonaws.com") if name == "ModifyNetworkInterfaceAttribute" => {
                    if request.get("groupSet").is_none() {
                        return ignored(
                            "ModifyNetworkInterfaceAttribute without a security-group change"
                                .into(),
                        );
                    }
                    match text(&request, &["networkInterfaceId"]) {
                        Some(interface) => Trigger::NetworkInterface {
                            interface,
                            event: name,
                        },
                        None => missing("requestParameters.networkInterfaceId"),
                    }
                }
                Some("elasticloadbalancing.amazonaws.com")
                    if ELB_EVENTS.contains(&name.as_str()) =>
                {
                    match text(&request, &["targetGroupArn"]) {
                        Some(arn) => match TargetGroupArn::parse(&arn) {
                            Some(arn) => Trigger::TargetGroup { arn, event: name },
                            None => ignored(format!(
                                "{name} whose targetGroupArn {arn:?} is not a target group ARN"
                            )),
                        },
                        None => missing("requestParameters.targetGroupArn"),
                    }
                }
                Some(other) => ignored(format!("{name} from {other} is not watched")),
                None => ignored(format!("{name} without detail.eventSource")),
            }
        }
        other => ignored(format!(
            "detail-type {other:?} from {source} is not watched"
        )),
    }
}

/// Who made a CloudTrail call, and which event recorded it: the audit trail logged beside every
/// change a run caused by that event makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// `userIdentity.arn`, or else the session issuer's ARN (a role's session).
    pub actor: String,
    /// CloudTrail's `eventID`.
    pub event_id: String,
}

/// The provenance of a CloudTrail event; `None` for anything else (schedules, state changes).
/// Missing keys read as `unknown`: a CloudTrail event is still handled without them.
pub fn provenance(event: &Value) -> Option<Provenance> {
    if event.get("detail-type").and_then(Value::as_str) != Some("AWS API Call via CloudTrail") {
        return None;
    }
    let detail = event.get("detail")?;
    let text = |pointer: &str| {
        detail
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let actor = text("/userIdentity/arn")
        .or_else(|| text("/userIdentity/sessionContext/sessionIssuer/arn"))
        .unwrap_or("unknown");
    Some(Provenance {
        actor: actor.to_string(),
        event_id: text("/eventID").unwrap_or("unknown").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TG: &str = "arn:aws:elasticloadbalancing:eu-west-1:111122223333:targetgroup/web/0123";

    fn cloudtrail(source: &str, name: &str, request: Value) -> Value {
        json!({"version": "0", "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
            "detail": {"eventSource": source, "eventName": name, "requestParameters": request,
                "userIdentity": {"sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::1:role/admin"}}}}})
    }

    #[test]
    fn a_per_cluster_sweep_may_ask_to_watch_for_its_period_and_a_bad_period_is_named() {
        let minutes = |n: u64| Ok(Some(std::time::Duration::from_secs(n * 60)));
        // (case, payload, what it asks)
        type Case = (
            &'static str,
            Value,
            Result<Option<std::time::Duration>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "the template's schedule: minutes",
                json!({"sweep-cluster": "prod", "watch-minutes": 5}),
                minutes(5),
            ),
            (
                "seconds",
                json!({"sweep-cluster": "prod", "watch-seconds": 45}),
                Ok(Some(std::time::Duration::from_secs(45))),
            ),
            ("no watch asked", json!({"sweep-cluster": "prod"}), Ok(None)),
            (
                "only a per-cluster sweep watches",
                json!({"watch-minutes": 5}),
                Ok(None),
            ),
            (
                "not a number",
                json!({"sweep-cluster": "prod", "watch-minutes": "five"}),
                Err("watch-minutes must be a whole number from 1 up to 900 seconds, not \"five\""),
            ),
            (
                "longer than Lambda lets it run",
                json!({"sweep-cluster": "prod", "watch-minutes": 16}),
                Err("watch-minutes must be a whole number from 1 up to 900 seconds, not 16"),
            ),
            (
                "no time at all",
                json!({"sweep-cluster": "prod", "watch-seconds": 0}),
                Err("watch-seconds must be a whole number from 1 up to 900 seconds, not 0"),
            ),
        ];
        for (case, payload, expected) in cases {
            assert_eq!(
                watch_period(&payload),
                expected.map_err(str::to_string),
                "{case}"
            );
        }
    }

    #[test]
    fn every_event_shape_maps_to_its_scope_or_is_ignored_with_a_reason() {
        let ec2 = "ec2.amazonaws.com";
        let elb = "elasticloadbalancing.amazonaws.com";
        let sg = |group: &str, event: &str| Trigger::SecurityGroup {
            group: group.into(),
            event: event.into(),
        };
        let cases: Vec<(&str, Value, Trigger)> = vec![
            (
                "a schedule sweeps",
                json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}),
                Trigger::Sweep {
                    reason: "scheduled (aws.events)".into(),
                    cluster: None,
                },
            ),
            (
                "the Scheduler's empty payload sweeps",
                json!({}),
                Trigger::Sweep {
                    reason: "scheduled (EventBridge Scheduler)".into(),
                    cluster: None,
                },
            ),
            (
                "a per-cluster schedule sweeps its cluster",
                json!({"sweep-cluster": "prod"}),
                Trigger::Sweep {
                    reason: "scheduled for one cluster (EventBridge Scheduler)".into(),
                    cluster: Some("prod".into()),
                },
            ),
            (
                "a per-cluster schedule without a name is refused",
                json!({"sweep-cluster": 7}),
                Trigger::Ignored {
                    reason: "sweep-cluster must be a cluster name".into(),
                },
            ),
            (
                "revoke names the group",
                cloudtrail(
                    ec2,
                    "RevokeSecurityGroupIngress",
                    json!({"groupId": "sg-1"}),
                ),
                sg("sg-1", "RevokeSecurityGroupIngress"),
            ),
            (
                "modify uses the nested PascalCase key",
                cloudtrail(
                    ec2,
                    "ModifySecurityGroupRules",
                    json!({"ModifySecurityGroupRulesRequest": {"GroupId": "sg-2"}}),
                ),
                sg("sg-2", "ModifySecurityGroupRules"),
            ),
            (
                "an interface's group change",
                cloudtrail(
                    ec2,
                    "ModifyNetworkInterfaceAttribute",
                    json!({"networkInterfaceId": "eni-1", "groupSet": {"items": [{"groupId": "sg-3"}]}}),
                ),
                Trigger::NetworkInterface {
                    interface: "eni-1".into(),
                    event: "ModifyNetworkInterfaceAttribute".into(),
                },
            ),
            (
                "an interface change that is not about groups",
                cloudtrail(
                    ec2,
                    "ModifyNetworkInterfaceAttribute",
                    json!({"networkInterfaceId": "eni-1", "sourceDestCheck": {"value": false}}),
                ),
                Trigger::Ignored {
                    reason: "ModifyNetworkInterfaceAttribute without a security-group change"
                        .into(),
                },
            ),
            (
                "targets registered by hand",
                cloudtrail(
                    elb,
                    "RegisterTargets",
                    json!({"targetGroupArn": TG, "targets": []}),
                ),
                Trigger::TargetGroup {
                    arn: TG.into(),
                    event: "RegisterTargets".into(),
                },
            ),
            (
                "a target-group event whose ARN is malformed",
                cloudtrail(
                    elb,
                    "DeregisterTargets",
                    json!({"targetGroupArn": "arn:tg", "targets": []}),
                ),
                Trigger::Ignored {
                    reason: "DeregisterTargets whose targetGroupArn \"arn:tg\" is not a target group ARN"
                        .into(),
                },
            ),
            (
                "an instance terminated",
                json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
                "detail": {"instance-id": "i-1", "state": "terminated"}}),
                Trigger::Instance {
                    instance: "i-1".into(),
                    state: "terminated".into(),
                },
            ),
            (
                "an unknown detail-type",
                json!({"detail-type": "Something", "source": "aws.s3", "detail": {}}),
                Trigger::Ignored {
                    reason: "detail-type \"Something\" from aws.s3 is not watched".into(),
                },
            ),
            (
                "not an object",
                json!([1, 2]),
                Trigger::Ignored {
                    reason: "the payload is not a JSON object".into(),
                },
            ),
            (
                "an event missing its key",
                cloudtrail(elb, "DeregisterTargets", json!({})),
                Trigger::Ignored {
                    reason: "DeregisterTargets without requestParameters.targetGroupArn".into(),
                },
            ),
        ];
        for (name, event, expected) in cases {
            assert_eq!(
                classify(&event, Some("arn:aws:iam::1:role/tgb")),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn the_reconcilers_own_calls_and_failed_calls_are_ignored() {
        let own = cloudtrail(
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            json!({"groupId": "sg-1"}),
        );
        assert!(matches!(
            classify(&own, Some("arn:aws:iam::1:role/admin")),
            Trigger::Ignored { .. }
        ));
        assert!(matches!(
            classify(&own, Some("arn:aws:iam::1:role/tgb")),
            Trigger::SecurityGroup { .. }
        ));
        let mut failed = own.clone();
        failed["detail"]["errorCode"] = json!("Client.InvalidGroup.NotFound");
        assert_eq!(
            classify(&failed, None),
            Trigger::Ignored {
                reason: "the call failed (Client.InvalidGroup.NotFound); nothing changed".into()
            }
        );
    }

    #[test]
    fn an_authorize_event_prefers_the_group_id_in_the_response() {
        let mut event = cloudtrail(
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            json!({"groupName": "web"}),
        );
        event["detail"]["responseElements"] =
            json!({"securityGroupRuleSet": {"items": [{"groupId": "sg-9"}]}});
        assert_eq!(
            classify(&event, None),
            Trigger::SecurityGroup {
                group: "sg-9".into(),
                event: "AuthorizeSecurityGroupIngress".into()
            }
        );
    }

    #[test]
    fn a_cloudtrail_event_names_its_actor_and_event_id_and_nothing_else_has_provenance() {
        let call = |identity: Value| {
            json!({"detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
                "detail": {"eventID": "e-1", "userIdentity": identity}})
        };
        // (case, event, expected actor and event id)
        type Case<'a> = (&'a str, Value, Option<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            (
                "the identity's own ARN is the actor",
                call(json!({"arn": "arn:aws:sts::1:assumed-role/Admin/jane",
                    "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::1:role/Admin"}}})),
                Some(("arn:aws:sts::1:assumed-role/Admin/jane", "e-1")),
            ),
            (
                "without one, the session issuer is",
                call(
                    json!({"sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::1:role/Admin"}}}),
                ),
                Some(("arn:aws:iam::1:role/Admin", "e-1")),
            ),
            (
                "an anonymous call is still audited as unknown",
                json!({"detail-type": "AWS API Call via CloudTrail", "detail": {}}),
                Some(("unknown", "unknown")),
            ),
            (
                "a schedule has no provenance",
                json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}),
                None,
            ),
            ("a payload that is not an object has none", json!([1]), None),
        ];
        for (name, event, expected) in cases {
            let expected = expected.map(|(actor, event_id)| Provenance {
                actor: actor.into(),
                event_id: event_id.into(),
            });
            assert_eq!(provenance(&event), expected, "{name}");
        }
    }
}
