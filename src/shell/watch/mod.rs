//! Following clusters: each cluster's watches keep an in-memory view current, and every change
//! runs a reconcile narrowed to what it can affect, planned from that view (no list per change)
//! under the cluster's lease, with AWS read fresh. Nothing runs while any kind of the view is
//! unknown; once it is complete again, the first run is a sweep.

use crate::adapters::kube::KubeEndpointSource;
use crate::adapters::kube_watch::ClusterWatch;
use crate::error::Result;
use crate::model::cluster::ClusterSnapshot;
use crate::ports::Ports;
use crate::ports::{EndpointSource, WatchLeases};
use crate::pure::plan::GateChange;
pub use crate::pure::watch::WatchRun;
use crate::pure::watch::affected::{Affected, affected, describe};
use crate::pure::watch::gates::{self, GateRechecks};
use crate::pure::watch::handover;
use crate::pure::watch::pending::Pending;
use crate::pure::watch::view::{Effect, WatchedView};
use crate::shell::cluster_run::reconcile_cluster_with;
use crate::shell::session::Session;
use crate::state::lease::{LeaseTerms, WatchClaim};
use crate::state::status::BindingStatus;
use reuse::{Reused, ReusingNetwork, ReusingRegistry};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

mod reuse;

/// How long a view may stay incomplete before the cluster is connected to afresh (a new
/// client: an EKS token lasts 15 minutes, and a watch that keeps failing may need a new one).
const RECONNECT_AFTER: Duration = Duration::from_secs(60);
/// How long to wait before connecting again when a client cannot be made.
const CONNECT_RETRY: Duration = Duration::from_secs(5);

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

    async fn set_pod_condition(&self, change: &GateChange) -> Result<()> {
        self.cluster.set_pod_condition(change).await
    }
}

/// How watchers hold each cluster's watch lease.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Who watches (unique per process or invocation), and how long a claim or renewal lasts.
    pub lease: LeaseTerms,
    /// How often the lease is renewed while watching; `None`: never, the lease covers the
    /// whole watch (a Lambda invocation, which ends at its deadline).
    pub renew_every: Option<Duration>,
}

impl WatchOptions {
    /// A process that watches until stopped: a minute's lease, renewed every 20 s.
    pub fn until_stopped(origin: &str) -> Self {
        Self {
            lease: LeaseTerms::new(origin, 60),
            renew_every: Some(Duration::from_secs(20)),
        }
    }
}

/// Follows every cluster of the session until `stop` turns true (or its sender is dropped),
/// handing each run to `report` as it ends. A run in progress when `stop` comes is finished
/// first, its write lease let go, and then the watch lease.
pub async fn watch_clusters(
    session: &Session<'_>,
    options: &WatchOptions,
    stop: watch::Receiver<bool>,
    report: &dyn Fn(WatchRun),
) {
    let followers = session
        .clusters
        .iter()
        .map(|cluster| follow_cluster(session, options, cluster, stop.clone(), report));
    futures::future::join_all(followers).await;
}

/// Why a watch of a cluster ended.
enum Ended {
    Stopped,
    /// The watch lease could not be kept: another watcher may follow the cluster now.
    LeaseLost,
    /// The view stayed incomplete too long, or the client could not be made: connect afresh.
    Reconnect,
    /// The client's credentials are due for renewal: connect afresh at once, keeping the lease.
    Refresh,
}

/// Follows one cluster while it holds the cluster's watch lease, standing by while another
/// watcher holds it. A dry run takes no lease (it writes nothing anywhere).
async fn follow_cluster(
    session: &Session<'_>,
    options: &WatchOptions,
    cluster: &str,
    mut stop: watch::Receiver<bool>,
    report: &dyn Fn(WatchRun),
) {
    let leases = &session.aws.store;
    let dry_run = session.options.dry_run;
    let mut standing_by = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let claim = if dry_run {
            Ok(WatchClaim::Acquired)
        } else {
            leases.claim_watch(cluster, &options.lease).await
        };
        let wait = match claim {
            Ok(WatchClaim::Acquired) => {
                tracing::info!(cluster, holder = %options.lease.holder, "watching the cluster");
                standing_by = None;
                let ended = watch_while_holding(session, options, cluster, &mut stop, report).await;
                if matches!(ended, Ended::Refresh) {
                    continue;
                }
                if !dry_run
                    && !matches!(ended, Ended::LeaseLost)
                    && let Err(error) = leases.release_watch(cluster, &options.lease).await
                {
                    tracing::warn!(cluster, error = %error.chain(), "watch lease not released; it lapses by itself");
                }
                match ended {
                    Ended::Stopped => return,
                    Ended::LeaseLost | Ended::Reconnect | Ended::Refresh => CONNECT_RETRY,
                }
            }
            Ok(WatchClaim::HeldBy { holder, until_ms }) => {
                if standing_by.as_ref() != Some(&holder) {
                    tracing::info!(cluster, holder = %holder, "another watcher follows the cluster; standing by");
                    standing_by = Some(holder);
                }
                handover::standby_wait(until_ms, now_ms())
            }
            Err(error) => {
                tracing::warn!(cluster, error = %error.chain(), "watch lease unreadable; trying again");
                CONNECT_RETRY
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Watches one cluster and runs what its changes call for, until stopped, until the lease
/// is lost, or until the cluster must be connected to afresh.
async fn watch_while_holding(
    session: &Session<'_>,
    options: &WatchOptions,
    cluster: &str,
    stop: &mut watch::Receiver<bool>,
    report: &dyn Fn(WatchRun),
) -> Ended {
    let leases = &session.aws.store;
    let reused = Reused::default();
    let renew_every = options.renew_every.filter(|_| !session.options.dry_run);
    let mut held_until_ms = now_ms().saturating_add(options.lease.seconds.saturating_mul(1000));
    let mut renew_at = renew_every.map(|every| Instant::now() + every);
    let client = match session.connector.watch_client(cluster).await {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(cluster, error = %error.chain(), "cannot connect to the cluster; nothing changes until it can be watched");
            return Ended::Reconnect;
        }
    };
    let refresh_at = session
        .connector
        .client_lifetime()
        .map(|lifetime| Instant::now() + lifetime);
    let mut watch = ClusterWatch::start(&client, cluster);
    let mut view = WatchedView::default();
    let mut pending = Pending::default();
    let mut rechecks = GateRechecks::default();
    // The first complete view is planned as a sweep.
    let started = Instant::now();
    pending.add(Affected::Everything, Some("watch started".into()), started);
    let mut incomplete_since = Some(started);
    loop {
        let due = pending.due_at().filter(|_| view.is_complete());
        let recheck_at = rechecks.next_at();
        let reconnect_at = incomplete_since.map(|since| since + RECONNECT_AFTER);
        tokio::select! {
            _ = stop.changed() => return Ended::Stopped,
            signal = watch.next() => {
                let Some((kind, signal)) = signal else { return Ended::Reconnect };
                let effect = view.apply(kind, signal);
                if let Effect::Lost { error, .. } = &effect {
                    tracing::warn!(cluster, error = %error, "watch failed; nothing is deregistered or revoked until the cluster is listed again");
                }
                pending.add(affected(&effect, &view), describe(&effect), Instant::now());
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
                let reuse = due.reuses_sweep_facts();
                let registry = ReusingRegistry { inner: &session.aws.registry, reused: &reused, reuse };
                let network = ReusingNetwork { inner: &session.aws.ec2, reused: &reused, reuse };
                let ports = Ports {
                    registry: &registry,
                    network: &network,
                    firewall: &session.aws.ec2,
                    store: &session.aws.store,
                };
                let span = tracing::info_span!("watch", caused_by = %due.causes.join("; "));
                let outcomes = reconcile_cluster_with(
                    cluster,
                    Ok(source),
                    &ports,
                    &session.policy,
                    &due.scope,
                    &session.options,
                    due.look(),
                )
                .instrument(span)
                .await;
                rechecks.after_run(&due.scope, gates::waiting(&outcomes), due.rechecks_only, Instant::now());
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
            () = sleep_until(recheck_at), if recheck_at.is_some() => {
                let now = Instant::now();
                pending.add_recheck(rechecks.take_due(now), now);
            }
            () = sleep_until(renew_at), if renew_at.is_some() => {
                let every = renew_every.unwrap_or(RECONNECT_AFTER);
                match leases.renew_watch(cluster, &options.lease).await {
                    Ok(true) => {
                        held_until_ms = now_ms().saturating_add(options.lease.seconds.saturating_mul(1000));
                    }
                    Ok(false) => {
                        tracing::warn!(cluster, "the watch lease passed to another watcher; standing by");
                        return Ended::LeaseLost;
                    }
                    Err(error) => {
                        tracing::warn!(cluster, error = %error.chain(), "watch lease not renewed");
                        if handover::must_let_go(held_until_ms, now_ms(), every) {
                            tracing::warn!(cluster, "the watch lease may lapse before it can be renewed; standing by");
                            return Ended::LeaseLost;
                        }
                    }
                }
                renew_at = Some(Instant::now() + every);
            }
            () = sleep_until(refresh_at), if refresh_at.is_some() => {
                tracing::info!(cluster, "the cluster token is due for renewal; connecting afresh (a list, then a sweep from it)");
                return Ended::Refresh;
            }
            () = sleep_until(reconnect_at), if reconnect_at.is_some() => {
                tracing::warn!(cluster, unknown = ?view.unknown_kinds(), "the cluster could not be listed for a minute; connecting afresh");
                return Ended::Reconnect;
            }
        }
    }
}

/// The time now in epoch milliseconds, as leases count it.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Sleeps until `at`; forever when there is nothing to wait for (the branch is disabled then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
