//! The sample payloads of `events/`, with the ids of a test's own world put in.

use serde_json::Value;

/// `events/<name>`, with each JSON pointer set to its value (the pointer must exist).
pub fn sample(name: &str, ids: &[(&str, &str)]) -> Value {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut event: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (pointer, value) in ids {
        *event
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{name} has no {pointer}")) = Value::from(*value);
    }
    event
}

/// Where the id an event is about lives in each sample kind.
pub const TARGET_GROUP_ARN: &str = "/detail/requestParameters/targetGroupArn";
pub const GROUP_ID: &str = "/detail/requestParameters/groupId";
pub const INSTANCE_ID: &str = "/detail/instance-id";

/// The ids the samples are written with, to be swapped for a test world's own.
pub const SAMPLE_NODE_GROUP: &str = "sg-0a1b2c3d4e5f60718";
pub const SAMPLE_PEER_GROUP: &str = "sg-0fedcba9876543210";
pub const SAMPLE_TARGET_GROUP: &str = "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/nginx-tgb-alb-ip/0123456789abcdef";
pub const SAMPLE_INTERFACE: &str = "eni-0123456789abcdef0";
pub const SAMPLE_INSTANCE: &str = "i-0abcdef1234567890";

/// The text of `events/<name>` with every sample id replaced (`(sample id, world id)`).
pub fn localized(name: &str, ids: &[(&str, &str)]) -> String {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    for (from, to) in ids {
        text = text.replace(from, to);
    }
    text
}

/// Every sample's file name, sorted.
pub fn names() -> Vec<String> {
    let dir = format!("{}/events", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}
