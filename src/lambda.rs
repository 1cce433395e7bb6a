//! The Lambda face of the binary: every invocation is classified, then (unless ignored) runs the
//! same code path as `tgb-reconciler reconcile`, and returns the plans and results.

use crate::adapters::Aws;
use crate::adapters::eks::{ClusterAccess, ClusterConnector};
use crate::cli::{DEFAULT_TABLE, reconcile_clusters};
use crate::error::Error;
use crate::reconcile::ClusterOutcome;
use crate::report::exit_code;
use crate::trigger::{Trigger, classify};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

pub async fn serve() -> Result<(), Error> {
    let table = std::env::var("TGB_TABLE").unwrap_or_else(|_| DEFAULT_TABLE.to_string());
    let aws = Aws::from_env(&table).await;
    let aws = &aws;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(aws, event.payload).await
    }))
    .await
    .map_err(|source| Error::LambdaRuntime { source })
}

/// What one event led to: its classification and, unless ignored, the clusters' outcomes.
pub struct HandledEvent {
    pub trigger: Trigger,
    pub outcomes: Vec<ClusterOutcome>,
}

impl HandledEvent {
    pub fn describe_trigger(&self) -> String {
        match &self.trigger {
            Trigger::Ignored { reason } => format!("ignored: {reason}"),
            Trigger::Sweep { reason } => format!("sweep: {reason}"),
            Trigger::SecurityGroup { group, event } => format!("{event} on security group {group}"),
            Trigger::NetworkInterface { interface, event } => {
                format!("{event} on network interface {interface}")
            }
            Trigger::TargetGroup { arn, event } => format!("{event} on {arn}"),
            Trigger::Instance { instance, state } => format!("instance {instance} is {state}"),
        }
    }

    pub fn to_json(&self, dry_run: bool) -> Value {
        json!({"trigger": self.trigger, "dry_run": dry_run, "clusters": self.outcomes, "exit_code": exit_code(&self.outcomes)})
    }
}

/// The one path of every invocation (Lambda and `handle-event`): classify, then reconcile. An
/// ignored event makes no AWS or cluster call at all. Events only say *that* something changed;
/// every run re-reads everything of the configured clusters (narrowing the scope to the
/// bindings an event touches is left to the state-table index).
pub async fn handle_event(
    event: &Value,
    own_role: Option<&str>,
    aws: &Aws,
    connector: &ClusterConnector,
    clusters: &[String],
    policy: &crate::reconcile::Policy,
    dry_run: bool,
) -> HandledEvent {
    let trigger = classify(event, own_role);
    if let Trigger::Ignored { reason } = &trigger {
        tracing::info!(reason = %reason, "event ignored");
        return HandledEvent {
            trigger,
            outcomes: Vec::new(),
        };
    }
    let outcomes = reconcile_clusters(aws, connector, clusters, policy, dry_run).await;
    HandledEvent { trigger, outcomes }
}

async fn handle(aws: &Aws, event: Value) -> Result<Value, Error> {
    let clusters: Vec<String> = std::env::var("TGB_CLUSTERS")
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if clusters.is_empty() {
        return Err(Error::Config("TGB_CLUSTERS is empty".into()));
    }
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let dry_run = flag("TGB_DRY_RUN");
    let policy = crate::reconcile::Policy {
        allow_world_open: flag("TGB_ALLOW_WORLD_OPEN"),
        revoke_world_open: flag("TGB_REVOKE_WORLD_OPEN"),
        ..Default::default()
    };
    let own_role = std::env::var("TGB_OWN_ROLE_ARN").ok();
    let connector = ClusterConnector::new(ClusterAccess::Eks, &aws.sdk, aws.calls.clone());
    let handled = handle_event(
        &event,
        own_role.as_deref(),
        aws,
        &connector,
        &clusters,
        &policy,
        dry_run,
    )
    .await;
    for outcome in &handled.outcomes {
        tracing::info!(cluster = %outcome.plan.cluster, "{}", outcome.plan.summary());
    }
    Ok(handled.to_json(dry_run))
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(error: Error) -> Self {
        let error_type = match &error {
            Error::Config(_) => "NonRetryable.Config",
            _ => "Reconcile",
        };
        Self {
            error_type: error_type.to_string(),
            error_message: error.chain(),
        }
    }
}
