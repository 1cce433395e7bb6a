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
