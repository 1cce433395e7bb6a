//! Watching a test's cluster: a watcher run beside a test body, and bounded waits.

use std::cell::RefCell;
use std::future::Future;
use std::time::{Duration, Instant};
use tgb_reconciler::shell::session::Session;
use tgb_reconciler::shell::watch::{WatchOptions, WatchRun, watch_clusters};

/// How long any one wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);
pub const POLL: Duration = Duration::from_millis(25);

/// The runs a watcher has reported so far.
pub type Runs = RefCell<Vec<WatchRun>>;

/// Runs `body` while the session's clusters are watched, handing it the watcher's runs as they
/// are reported; returns them once `body` is done and the watcher has stopped.
pub async fn while_watching(session: &Session<'_>, body: impl AsyncFnOnce(&Runs)) -> Vec<WatchRun> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runs = RefCell::new(Vec::new());
    let report = |run: WatchRun| runs.borrow_mut().push(run);
    let body = async {
        body(&runs).await;
        let _ = stop.send(true);
    };
    let options = WatchOptions::until_stopped("test");
    tokio::join!(watch_clusters(session, &options, stopped, &report), body);
    runs.into_inner()
}

/// Polls until `holds` says yes; the time it took. Fails the test after [`DEADLINE`].
pub async fn wait_for<F, Fut>(what: &str, mut holds: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if holds().await {
            return start.elapsed();
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{what}: not within {DEADLINE:?}");
}
