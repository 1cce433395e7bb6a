//! The Lambda face of the binary: every invocation sweeps the configured clusters through the
//! same code path as `tgb-reconciler reconcile`, and returns the plans and results.

use crate::adapters::Aws;
use crate::adapters::eks::{ClusterAccess, ClusterConnector};
use crate::cli::{DEFAULT_TABLE, reconcile_clusters};
use crate::error::Error;
use crate::report::exit_code;
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

async fn handle(aws: &Aws, _event: Value) -> Result<Value, Error> {
    let clusters: Vec<String> = std::env::var("TGB_CLUSTERS")
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if clusters.is_empty() {
        return Err(Error::Config("TGB_CLUSTERS is empty".into()));
    }
    let dry_run = std::env::var("TGB_DRY_RUN").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let connector = ClusterConnector::new(ClusterAccess::Eks, &aws.sdk, aws.calls.clone());
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let policy = crate::reconcile::Policy {
        allow_world_open: flag("TGB_ALLOW_WORLD_OPEN"),
        revoke_world_open: flag("TGB_REVOKE_WORLD_OPEN"),
        ..Default::default()
    };
    let outcomes = reconcile_clusters(aws, &connector, &clusters, &policy, dry_run).await;
    for outcome in &outcomes {
        tracing::info!(cluster = %outcome.plan.cluster, "{}", outcome.plan.summary());
    }
    Ok(json!({"dry_run": dry_run, "clusters": outcomes, "exit_code": exit_code(&outcomes)}))
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
