//! Following clusters: each cluster's watches keep an in-memory view current, and every change
//! runs a reconcile narrowed to what it can affect, planned from that view (no list per change)
//! under the cluster's lease, with AWS read fresh. Nothing runs while any kind of the view is
//! unknown; once it is complete again, the first run is a sweep.

use crate::adapters::kube::KubeEndpointSource;
use crate::adapters::kube_watch::ClusterWatch;
use crate::error::Result;
use crate::model::cluster::ClusterSnapshot;
use crate::ports::EndpointSource;
use crate::pure::outcome::ClusterOutcome;
use crate::pure::watch::affected::{Affected, affected, describe};
use crate::pure::watch::pending::Pending;
use crate::pure::watch::view::{Effect, WatchedView};
use crate::shell::cluster_run::reconcile_cluster;
use crate::shell::session::Session;
use crate::state::status::BindingStatus;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// How long a view may stay incomplete before the cluster is connected to afresh (a new
/// client: an EKS token lasts 15 minutes, and a watch that keeps failing may need a new one).
const RECONNECT_AFTER: Duration = Duration::from_secs(60);
/// How long to wait before connecting again when a client cannot be made.
const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// One run of a watcher, as told: what caused it and what it came to.
#[derive(Debug, Clone, Serialize)]
pub struct WatchRun {
    pub cluster: String,
    /// The changes that caused it, in order: `EndpointSlice default/web-x7k2p modified`.
    pub causes: Vec<String>,
    /// From the arrival of the first change to the end of the run's last write.
    pub change_to_applied_ms: u64,
    pub outcomes: Vec<ClusterOutcome>,
}

/// Serves a run the view it was planned from; statuses still go to the cluster.
struct WatchedSource {
    snapshot: Arc<ClusterSnapshot>,
    cluster: KubeEndpointSource,
}

impl EndpointSource for WatchedSource {
    async fn snapshot(&self) -> Result<Arc<ClusterSnapshot>> {
        Ok(Arc::clone(&self.snapshot))
    }

    async fn publish_status(&self, status: &BindingStatus) -> Result<()> {
        self.cluster.publish_status(status).await
    }
}

/// Follows every cluster of the session until `stop` turns true (or its sender is dropped),
/// handing each run to `report` as it ends. A run in progress when `stop` comes is finished
/// first, and its lease let go.
pub async fn watch_clusters(
    session: &Session<'_>,
    stop: watch::Receiver<bool>,
    report: &dyn Fn(WatchRun),
) {
    let followers = session
        .clusters
        .iter()
        .map(|cluster| follow_cluster(session, cluster, stop.clone(), report));
    futures::future::join_all(followers).await;
}

/// Follows one cluster: connects, watches, and runs what the changes call for.
async fn follow_cluster(
    session: &Session<'_>,
    cluster: &str,
    mut stop: watch::Receiver<bool>,
    report: &dyn Fn(WatchRun),
) {
    let ports = session.aws.ports();
    loop {
        if *stop.borrow() {
            return;
        }
        let client = match session.connector.watch_client(cluster).await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(cluster, error = %error.chain(), "cannot connect to the cluster; nothing changes until it can be watched");
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(CONNECT_RETRY) => continue,
                }
            }
        };
        let mut watch = ClusterWatch::start(&client, cluster);
        let mut view = WatchedView::default();
        let mut pending = Pending::default();
        // The first complete view is planned as a sweep.
        let started = Instant::now();
        pending.add(Affected::Everything, Some("watch started".into()), started);
        let mut incomplete_since = Some(started);
        loop {
            let due = pending.due_at().filter(|_| view.is_complete());
            let reconnect_at = incomplete_since.map(|since| since + RECONNECT_AFTER);
            tokio::select! {
                _ = stop.changed() => return,
                signal = watch.next() => {
                    let Some((kind, signal)) = signal else { break };
                    let effect = view.apply(kind, signal);
                    if let Effect::Lost { error, .. } = &effect {
                        tracing::warn!(cluster, error = %error, "watch failed; nothing is deregistered or revoked until the cluster is listed again");
                    }
                    pending.add(affected(&effect), describe(&effect), Instant::now());
                    incomplete_since = match (view.is_complete(), incomplete_since) {
                        (true, _) => None,
                        (false, since) => Some(since.unwrap_or_else(Instant::now)),
                    };
                }
                () = sleep_until(due), if due.is_some() => {
                    let Some(due) = pending.take_due(Instant::now()) else { continue };
                    let Some(snapshot) = view.snapshot() else { continue };
                    let source = WatchedSource {
                        snapshot: Arc::new(snapshot),
                        cluster: KubeEndpointSource::new(client.clone(), cluster),
                    };
                    let span = tracing::info_span!("watch", caused_by = %due.causes.join("; "));
                    let outcomes = reconcile_cluster(
                        cluster,
                        Ok(source),
                        &ports,
                        &session.policy,
                        &due.scope,
                        &session.options,
                    )
                    .instrument(span)
                    .await;
                    let change_to_applied_ms =
                        u64::try_from(due.since.elapsed().as_millis()).unwrap_or(u64::MAX);
                    tracing::info!(cluster, scope = %due.scope, change_to_applied_ms, caused_by = %due.causes.join("; "), "watch run done");
                    report(WatchRun {
                        cluster: cluster.to_string(),
                        causes: due.causes,
                        change_to_applied_ms,
                        outcomes,
                    });
                }
                () = sleep_until(reconnect_at), if reconnect_at.is_some() => {
                    tracing::warn!(cluster, unknown = ?view.unknown_kinds(), "the cluster could not be listed for a minute; connecting afresh");
                    break;
                }
            }
        }
    }
}

/// Sleeps until `at`; forever when there is nothing to wait for (the branch is disabled then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
