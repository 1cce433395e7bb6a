//! What an invocation answers, and what `--output json` prints, without holding a whole plan as
//! JSON values: a first sweep of a large cluster plans tens of thousands of changes, which as a
//! `serde_json::Value` tree take hundreds of MiB, and as an answer would pass Lambda's limit on
//! a response's size. Every change is in the logs either way.

use crate::pure::outcome::{ClusterOutcome, exit_code};
use crate::pure::trigger::Trigger;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;

/// How long the runs of one answer may be, as JSON: an asynchronous invocation's result goes
/// to its destination only within 256 KB (a synchronous one within 6 MB).
pub const ANSWER_LIMIT: usize = 200 * 1024;

/// The document `reconcile` and `handle-event` print with `--output json`, written as it is
/// serialized (on a terminal there is no limit: every run whole).
#[derive(Serialize)]
pub struct Document<'a> {
    /// What the event was taken for (`handle-event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<&'a Trigger>,
    pub dry_run: bool,
    pub clusters: &'a [ClusterOutcome],
    pub exit_code: u8,
    /// The AWS calls the process made, by `Service.Operation`: what the run cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_calls: Option<&'a BTreeMap<String, usize>>,
}

impl<'a> Document<'a> {
    pub fn new(clusters: &'a [ClusterOutcome], dry_run: bool) -> Self {
        Self {
            trigger: None,
            dry_run,
            clusters,
            exit_code: exit_code(clusters),
            aws_calls: None,
        }
    }
}

/// The runs as an answer: each whole while all of them fit in [`ANSWER_LIMIT`], otherwise each
/// run that does not fit in its part of it as one line of plan and one of what was applied.
pub fn runs_within_limit(outcomes: &[ClusterOutcome]) -> Vec<Value> {
    let part = ANSWER_LIMIT / outcomes.len().max(1);
    outcomes
        .iter()
        .map(|outcome| within(outcome, part).unwrap_or_else(|| summary(outcome, part)))
        .collect()
}

/// `value` as JSON when it takes at most `limit` bytes; found out without writing more.
pub fn within(value: &impl Serialize, limit: usize) -> Option<Value> {
    let mut out = Bounded {
        bytes: Vec::new(),
        limit,
    };
    serde_json::to_writer(&mut out, value).ok()?;
    serde_json::from_slice(&out.bytes).ok()
}

/// One run told in a line of plan and a line of what was applied.
fn summary(outcome: &ClusterOutcome, limit: usize) -> Value {
    let stopped = outcome.report.as_ref().and_then(|r| r.stopped.as_ref());
    json!({
        "cluster": outcome.plan.cluster,
        "scope": outcome.scope.to_string(),
        "summarized": format!("the whole run is longer than its {limit} bytes of the answer; every change is in the logs"),
        "plan": outcome.plan.summary(),
        "report": outcome.report.as_ref().map(|r| r.summary()),
        "failed": outcome.plan.failures().len() + outcome.report.as_ref().map_or(0, |r| r.failed().len()),
        "stopped": stopped,
        "skipped": outcome.skipped,
        "lease_error": outcome.lease_error,
    })
}

/// A writer that refuses to grow past its limit.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::Error::other("past the limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BindingId, Target, TargetGroupRef};
    use crate::pure::plan::{BindingPlan, Plan, Presence, TargetAction, TargetChange};
    use crate::pure::scope::Scope;

    /// A run that plans `targets` registrations for one binding.
    fn run_registering(targets: usize) -> ClusterOutcome {
        let mut plan = Plan::empty("prod");
        let binding = BindingId::resource("default", "web");
        let target_group = TargetGroupRef::new(
            "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/0123",
        );
        let mut binding_plan = BindingPlan::new(
            binding.clone(),
            Presence::Declared {
                generation: Some(1),
            },
        );
        binding_plan.registrations = (0..targets)
            .map(|i| TargetChange {
                action: TargetAction::RegisterTargets,
                binding: binding.clone(),
                target_group: target_group.clone(),
                target: Target::new(format!("10.0.{}.{}", i / 250, i % 250), 8080),
                availability_zone: None,
                reason: "ready endpoint".into(),
            })
            .collect();
        plan.bindings.insert(binding, binding_plan);
        ClusterOutcome::new(&Scope::Cluster, plan, None)
    }

    #[test]
    fn a_value_is_written_whole_within_the_limit_and_not_at_all_past_it() {
        let words = vec!["word"; 100];
        let whole = serde_json::to_vec(&words).expect("JSON").len();
        assert_eq!(within(&words, whole), Some(json!(words)));
        assert_eq!(within(&words, whole - 1), None);
    }

    #[test]
    fn a_small_run_is_answered_whole_and_a_large_one_in_two_lines() {
        let small = runs_within_limit(&[run_registering(2)]);
        assert_eq!(
            small[0]["plan"]["bindings"][0]["registrations"]
                .as_array()
                .map(Vec::len),
            Some(2),
            "{small:?}"
        );

        let large = [run_registering(2), run_registering(20_000)];
        let answer = runs_within_limit(&large);
        assert!(answer[0].get("summarized").is_none(), "{:?}", answer[0]);
        assert_eq!(
            answer[1]["plan"],
            "Plan for prod: 20000 to register, 0 to deregister, 0 blocked, 0 binding(s) failed."
        );
        assert!(answer[1]["summarized"].is_string(), "{:?}", answer[1]);
        let size = serde_json::to_vec(&answer).expect("JSON").len();
        assert!(size <= ANSWER_LIMIT, "{size} bytes");
    }

    #[test]
    fn the_printed_document_names_its_runs_exit_code_and_calls() {
        let runs = [run_registering(1)];
        let calls = BTreeMap::from([("EC2.DescribeInstances".to_string(), 2)]);
        let document = Document {
            aws_calls: Some(&calls),
            ..Document::new(&runs, true)
        };
        let printed = serde_json::to_value(&document).expect("JSON");
        assert_eq!(printed["dry_run"], true);
        assert_eq!(printed["exit_code"], 0);
        assert_eq!(printed["aws_calls"]["EC2.DescribeInstances"], 2);
        assert_eq!(printed["clusters"][0]["plan"]["cluster"], "prod");
    }
}
