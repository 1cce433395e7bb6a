//! Every sample payload in `events/` is a well-formed EventBridge envelope, so none can rot.

use aws_lambda_events::eventbridge::EventBridgeEvent;

#[test]
fn every_sample_event_parses_as_an_eventbridge_envelope() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/events");
    let mut parsed = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir}: {e}")) {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let event: EventBridgeEvent<serde_json::Value> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not an EventBridge event: {e}", path.display()));
        assert!(
            !event.source.is_empty() && !event.detail_type.is_empty(),
            "{}",
            path.display()
        );
        parsed += 1;
    }
    assert!(parsed > 0, "no sample in {dir}");
}
