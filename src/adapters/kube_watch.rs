//! Follows one cluster through the Kubernetes API: a kube-runtime watcher per kind, each object
//! projected to its plain value as it arrives (the whole API object is dropped at once), the
//! signals of all kinds merged into one channel.
//!
//! The watcher resumes a dropped watch from its last resourceVersion (bookmarks keep that
//! recent) and lists again after 410 Gone. Any error it reports is passed on as
//! [`Signal::Failed`], and that kind's watcher is started afresh after a jittered backoff: its
//! new list ends in [`Signal::ListDone`], which is how the view knows the kind again.

use super::kube::{binding_api, binding_resource, endpoint_slice, node, pod, service};
use crate::error::Error;
use crate::model::watched::{Kind, Object, Signal};
use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::Resource;
use kube::api::Api;
use kube::core::DynamicObject;
use kube::runtime::watcher::{self, Event, watcher};
use rand::Rng;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Signals buffered between the watchers and the loop that plans: a run in progress holds the
/// watchers back once this many wait.
const BUFFERED_SIGNALS: usize = 4096;
/// How soon a watcher that failed starts again, at first and at most.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// How often a cluster without the TargetGroupBinding CRD is asked again whether it has it.
const ABSENT_RECHECK: Duration = Duration::from_secs(60);

/// The watches of one cluster; they stop when this is dropped.
pub struct ClusterWatch {
    signals: mpsc::Receiver<(Kind, Signal)>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterWatch {
    /// Starts a watcher per kind on `client`.
    pub fn start(client: &kube::Client, cluster: &str) -> Self {
        let (sender, signals) = mpsc::channel(BUFFERED_SIGNALS);
        let follower = |kind| Follower {
            kind,
            cluster: cluster.to_string(),
            signals: sender.clone(),
        };
        let tasks = vec![
            tokio::spawn(follower(Kind::TargetGroupBinding).follow(
                Api::<DynamicObject>::all_with(client.clone(), &binding_api()),
                |o| Object::Binding(binding_resource(o)),
            )),
            tokio::spawn(
                follower(Kind::Service).follow(Api::<core::Service>::all(client.clone()), |o| {
                    Object::Service(service(o))
                }),
            ),
            tokio::spawn(
                follower(Kind::EndpointSlice)
                    .follow(Api::<discovery::EndpointSlice>::all(client.clone()), |o| {
                        Object::EndpointSlice(endpoint_slice(o))
                    }),
            ),
            tokio::spawn(
                follower(Kind::Node).follow(Api::<core::Node>::all(client.clone()), |o| {
                    Object::Node(node(o))
                }),
            ),
            tokio::spawn(
                follower(Kind::Pod).follow(Api::<core::Pod>::all(client.clone()), |o| {
                    Object::Pod(pod(o))
                }),
            ),
        ];
        Self { signals, tasks }
    }

    /// The next signal of any kind. `None` only if every watcher has stopped.
    pub async fn next(&mut self) -> Option<(Kind, Signal)> {
        self.signals.recv().await
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One kind's watcher, and where its signals go.
struct Follower {
    kind: Kind,
    cluster: String,
    signals: mpsc::Sender<(Kind, Signal)>,
}

impl Follower {
    /// Watches until the receiving end is gone, starting afresh after every error.
    async fn follow<K>(self, api: Api<K>, project: fn(K) -> Object)
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let mut retry = FIRST_RETRY;
        loop {
            let mut stream = std::pin::pin!(watcher(api.clone(), watcher::Config::default()));
            let wait = loop {
                let Some(item) = stream.next().await else {
                    break retry;
                };
                let signal = match item {
                    Ok(Event::Init) => Signal::Relisting,
                    Ok(Event::InitApply(object)) => Signal::Listed(project(object)),
                    Ok(Event::InitDone) => {
                        retry = FIRST_RETRY;
                        Signal::ListDone
                    }
                    Ok(Event::Apply(object)) => Signal::Applied(project(object)),
                    Ok(Event::Delete(object)) => Signal::Deleted(project(object)),
                    Err(error) if self.kind == Kind::TargetGroupBinding && not_found(&error) => {
                        if !self.send(Signal::Absent).await {
                            return;
                        }
                        break ABSENT_RECHECK;
                    }
                    Err(error) => {
                        let error = Error::WatchClusterResources {
                            cluster: self.cluster.clone(),
                            kind: self.kind,
                            source: Box::new(error),
                        };
                        if !self.send(Signal::Failed(error.chain())).await {
                            return;
                        }
                        break jittered(retry);
                    }
                };
                if !self.send(signal).await {
                    return;
                }
            };
            retry = (retry * 2).min(LAST_RETRY);
            tokio::time::sleep(wait).await;
        }
    }

    /// Passes a signal on; `false` when nobody listens any more.
    async fn send(&self, signal: Signal) -> bool {
        self.signals.send((self.kind, signal)).await.is_ok()
    }
}

/// Whether the API said the kind does not exist (no CRD).
fn not_found(error: &watcher::Error) -> bool {
    matches!(
        error,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
            | watcher::Error::WatchStartFailed(kube::Error::Api(status))
            if status.code == 404
    )
}

/// Half to all of `retry`, so that the watchers of many processes do not retry in step.
fn jittered(retry: Duration) -> Duration {
    retry.mul_f64(rand::rng().random_range(0.5..=1.0))
}
