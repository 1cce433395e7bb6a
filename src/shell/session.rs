//! A session: the checked settings of one invocation (from flags on a terminal, from the
//! environment under Lambda), and the loop over its clusters.

use crate::adapters::Aws;
use crate::adapters::eks::ClusterConnector;
use crate::adapters::kube::KubeEndpointSource;
use crate::pure::outcome::ClusterOutcome;
use crate::pure::plan::Policy;
use crate::pure::report::Stopped;
use crate::pure::scope::Scope;
use crate::shell::cluster_run::{RunOptions, nothing_in_scope, reconcile_cluster};
use std::time::Duration;

/// Everything a run needs, checked: from flags on a terminal, from the same environment
/// variables under Lambda.
pub struct Session<'a> {
    pub aws: &'a Aws,
    pub connector: ClusterConnector,
    pub clusters: Vec<String>,
    pub policy: Policy,
    pub options: RunOptions,
}

/// Reconciles clusters one after the other, each as far as its scope reaches; a cluster that
/// cannot be reached fails alone. A cluster the event does not concern is not even connected
/// to. With a deadline, a cluster starts only while more than the reserve is left; the ones
/// that do not are reported as not started, for the next run.
pub async fn reconcile_clusters(
    session: &Session<'_>,
    work: &[(String, Scope)],
) -> Vec<ClusterOutcome> {
    let ports = session.aws.ports();
    let mut outcomes = Vec::with_capacity(work.len());
    for (cluster, scope) in work {
        if let Some(deadline) = session.options.deadline {
            let left = deadline.left();
            // A cluster's run has no batches timed yet: it starts if any time beyond the
            // reserve is left, and stops itself before its first write if that was not enough.
            if !deadline.allows(Duration::ZERO) {
                let stopped = Stopped {
                    seconds_before_deadline: left.as_secs(),
                    ..Stopped::default()
                };
                tracing::info!(cluster, "not started: the deadline is near");
                outcomes.push(ClusterOutcome::not_started(cluster, scope, stopped));
                continue;
            }
        }
        if let Some(outcome) = nothing_in_scope(cluster, scope, &ports).await {
            outcomes.push(outcome);
            continue;
        }
        let source = session
            .connector
            .client(cluster)
            .await
            .map(|client| KubeEndpointSource::new(client, cluster));
        let run = reconcile_cluster(
            cluster,
            source,
            &ports,
            &session.policy,
            scope,
            &session.options,
        );
        outcomes.extend(Box::pin(run).await);
    }
    outcomes
}
